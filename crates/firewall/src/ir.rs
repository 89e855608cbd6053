//! The rule model: tables, chains, rules, matches, actions and named sets, shaped like
//! nftables. Front ends (`iptables`, `classbench`) and other crates (an overlay policy
//! compiler) produce a [`RuleSet`]; [`crate::Firewall`] compiles and runs it.
//!
//! Addresses are IPv4 ([`AddrRange`]) or IPv6 ([`Addr6Range`]). Rules follow the
//! nftables `inet` family: a rule whose address matches are IPv4 matches only IPv4 packets,
//! one whose address matches are IPv6 only IPv6 packets, and one without address ranges
//! both ([`Rule::family`]); a rule mixing the two does not validate. Every range in this
//! module is inclusive at both ends.

use core::fmt;
use core::net::{Ipv4Addr, Ipv6Addr};
use core::time::Duration;

/// An inclusive range of IPv4 addresses, held as host-order `u32`. A prefix is a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct AddrRange {
    /// First address.
    pub lo: u32,
    /// Last address.
    pub hi: u32,
}

impl AddrRange {
    /// Every address.
    pub const ANY: AddrRange = AddrRange {
        lo: 0,
        hi: u32::MAX,
    };

    /// The range of `addr/len`; host bits of `addr` are ignored. `None` if `len > 32`.
    pub fn prefix(addr: Ipv4Addr, len: u8) -> Option<AddrRange> {
        if len > 32 {
            return None;
        }
        let mask = if len == 0 { 0 } else { u32::MAX << (32 - len) };
        let lo = u32::from(addr) & mask;
        Some(AddrRange { lo, hi: lo | !mask })
    }
    /// One address.
    pub fn host(addr: Ipv4Addr) -> AddrRange {
        let a = u32::from(addr);
        AddrRange { lo: a, hi: a }
    }
    /// Whether `a` is in the range.
    #[inline]
    pub fn contains(&self, a: u32) -> bool {
        self.lo <= a && a <= self.hi
    }
    /// The prefix length if the range is exactly one prefix.
    pub fn prefix_len(&self) -> Option<u8> {
        let span = self.hi.wrapping_sub(self.lo);
        if self.lo > self.hi || span.wrapping_add(1) & span != 0 || self.lo & span != 0 {
            return None;
        }
        Some(32 - span.count_ones() as u8)
    }
}

impl fmt::Display for AddrRange {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len() {
            Some(32) => write!(f, "{}", Ipv4Addr::from(self.lo)),
            Some(len) => write!(f, "{}/{}", Ipv4Addr::from(self.lo), len),
            None => write!(f, "{}-{}", Ipv4Addr::from(self.lo), Ipv4Addr::from(self.hi)),
        }
    }
}

/// An inclusive range of IPv6 addresses, held as host-order `u128`. A prefix is a range.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Addr6Range {
    /// First address.
    pub lo: u128,
    /// Last address.
    pub hi: u128,
}

impl Addr6Range {
    /// Every IPv6 address.
    pub const ANY: Addr6Range = Addr6Range {
        lo: 0,
        hi: u128::MAX,
    };

    /// The range of `addr/len`; host bits of `addr` are ignored. `None` if `len > 128`.
    pub fn prefix(addr: Ipv6Addr, len: u8) -> Option<Addr6Range> {
        if len > 128 {
            return None;
        }
        let mask = if len == 0 {
            0
        } else {
            u128::MAX << (128 - len)
        };
        let lo = u128::from(addr) & mask;
        Some(Addr6Range { lo, hi: lo | !mask })
    }
    /// One address.
    pub fn host(addr: Ipv6Addr) -> Addr6Range {
        let a = u128::from(addr);
        Addr6Range { lo: a, hi: a }
    }
    /// Whether `a` is in the range.
    #[inline]
    pub fn contains(&self, a: u128) -> bool {
        self.lo <= a && a <= self.hi
    }
    /// The prefix length if the range is exactly one prefix.
    pub fn prefix_len(&self) -> Option<u8> {
        let span = self.hi.wrapping_sub(self.lo);
        if self.lo > self.hi || span.wrapping_add(1) & span != 0 || self.lo & span != 0 {
            return None;
        }
        Some(128 - span.count_ones() as u8)
    }
}

impl fmt::Display for Addr6Range {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self.prefix_len() {
            Some(128) => write!(f, "{}", Ipv6Addr::from(self.lo)),
            Some(len) => write!(f, "{}/{}", Ipv6Addr::from(self.lo), len),
            None => write!(f, "{}-{}", Ipv6Addr::from(self.lo), Ipv6Addr::from(self.hi)),
        }
    }
}

/// An IP version, as a rule's address matches select it (see [`Rule::family`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Family {
    /// IPv4 only.
    Ipv4,
    /// IPv6 only.
    Ipv6,
}

/// An inclusive range of ports.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct PortRange {
    /// First port.
    pub lo: u16,
    /// Last port.
    pub hi: u16,
}

impl PortRange {
    /// Every port.
    pub const ANY: PortRange = PortRange {
        lo: 0,
        hi: u16::MAX,
    };
    /// One port.
    pub const fn single(p: u16) -> PortRange {
        PortRange { lo: p, hi: p }
    }
    /// Whether `p` is in the range.
    #[inline]
    pub fn contains(&self, p: u16) -> bool {
        self.lo <= p && p <= self.hi
    }
}

/// Where an address match looks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum AddrMatch {
    /// One IPv4 prefix or range; the rule then matches IPv4 packets only.
    Range(AddrRange),
    /// One IPv6 prefix or range; the rule then matches IPv6 packets only.
    Range6(Addr6Range),
    /// A named address set (see [`SetKind::Addr`]); an IPv4 packet is looked up among the
    /// set's IPv4 entries, an IPv6 packet among its IPv6 entries.
    Set(String),
}

/// Where a port match looks.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum PortMatch {
    /// Any of these ranges (a single port, a range, a `multiport` list).
    Ranges(Vec<PortRange>),
    /// A named port set (see [`SetKind::Port`]).
    Set(String),
}

/// An interface name match; a trailing `+` in iptables becomes `prefix: true`.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct IfaceMatch {
    /// The name, or the prefix when `prefix` is set.
    pub name: String,
    /// Match every interface whose name starts with `name`.
    pub prefix: bool,
}

impl IfaceMatch {
    /// Whether interface `iface` matches.
    pub fn matches(&self, iface: &str) -> bool {
        if self.prefix {
            iface.starts_with(self.name.as_str())
        } else {
            iface == self.name
        }
    }
}

/// Connection tracking states, as a bit set.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct CtStates(pub u8);

impl CtStates {
    /// The first packet of a flow the table does not know.
    pub const NEW: CtStates = CtStates(1);
    /// A packet of a flow that has seen traffic both ways (or a reply).
    pub const ESTABLISHED: CtStates = CtStates(2);
    /// An ICMP error about a known flow.
    pub const RELATED: CtStates = CtStates(4);
    /// A packet that fits no valid state (a stray ACK, a truncated header).
    pub const INVALID: CtStates = CtStates(8);
    /// Whether every state of `other` is in `self`.
    pub fn contains(self, other: CtStates) -> bool {
        self.0 & other.0 == other.0
    }
    /// Whether `self` and `other` share a state.
    pub fn intersects(self, other: CtStates) -> bool {
        self.0 & other.0 != 0
    }
}

impl core::ops::BitOr for CtStates {
    type Output = CtStates;
    fn bitor(self, o: CtStates) -> CtStates {
        CtStates(self.0 | o.0)
    }
}

/// A rate: `count` events per `per`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Rate {
    /// Events allowed per period.
    pub count: u32,
    /// The period.
    pub per: Duration,
}

/// Which packet fields key a per-key rate limit (`hashlimit --hashlimit-mode`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct HashKey {
    /// Source address.
    pub src_ip: bool,
    /// Destination address.
    pub dst_ip: bool,
    /// Source port.
    pub src_port: bool,
    /// Destination port.
    pub dst_port: bool,
}

/// Which side of the packet a set lookup uses (`--match-set NAME src,dst`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Dir {
    /// The source address or port.
    Src,
    /// The destination address or port.
    Dst,
}

/// One condition of a rule. A rule matches when all its matches do. `neg` inverts one match
/// (iptables `!`).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Match {
    /// Input interface (`-i`).
    InIface {
        /// The interface name or prefix.
        iface: IfaceMatch,
        /// Inverts the match.
        neg: bool,
    },
    /// Output interface (`-o`).
    OutIface {
        /// The interface name or prefix.
        iface: IfaceMatch,
        /// Inverts the match.
        neg: bool,
    },
    /// Source address (`-s`).
    Src {
        /// The prefix, range or set.
        addr: AddrMatch,
        /// Inverts the match.
        neg: bool,
    },
    /// Destination address (`-d`).
    Dst {
        /// The prefix, range or set.
        addr: AddrMatch,
        /// Inverts the match.
        neg: bool,
    },
    /// IP protocol (`-p`); for IPv6 the upper-layer header after the extension headers
    /// (1 is ICMP for IPv4, 58 ICMPv6).
    Proto {
        /// The protocol number.
        proto: u8,
        /// Inverts the match.
        neg: bool,
    },
    /// Source port (`--sport`, `--sports`); only TCP, UDP, SCTP, DCCP, UDP-Lite have one.
    SrcPort {
        /// The ports or set.
        ports: PortMatch,
        /// Inverts the match.
        neg: bool,
    },
    /// Destination port.
    DstPort {
        /// The ports or set.
        ports: PortMatch,
        /// Inverts the match.
        neg: bool,
    },
    /// ICMPv6 type and, optionally, code (`--icmpv6-type`); matches ICMPv6 packets only.
    Icmp6 {
        /// The ICMPv6 type.
        ty: u8,
        /// The ICMPv6 code, any if `None`.
        code: Option<u8>,
        /// Inverts the match.
        neg: bool,
    },
    /// ICMP (IPv4) type and, optionally, code (`--icmp-type`); matches ICMPv4 packets only.
    Icmp {
        /// The ICMP type.
        ty: u8,
        /// The ICMP code, any if `None`.
        code: Option<u8>,
        /// Inverts the match.
        neg: bool,
    },
    /// TCP flags: `(flags & mask) == set` (`--tcp-flags MASK SET`, `--syn`).
    TcpFlags {
        /// Flags examined (FIN 0x01, SYN 0x02, RST 0x04, PSH 0x08, ACK 0x10, URG 0x20).
        mask: u8,
        /// Which of the examined flags must be set.
        set: u8,
        /// Inverts the match.
        neg: bool,
    },
    /// Connection tracking state (`-m state`, `-m conntrack --ctstate`).
    CtState {
        /// Any of these states matches.
        states: CtStates,
        /// Inverts the match.
        neg: bool,
    },
    /// Packet mark: `(mark & mask) == value`.
    Mark {
        /// Value compared or set.
        value: u32,
        /// Bits concerned.
        mask: u32,
        /// Inverts the match.
        neg: bool,
    },
    /// IP total length in a range (for IPv6, the payload length plus the 40-byte header,
    /// as ip6tables counts it).
    Length {
        /// Smallest length.
        lo: u16,
        /// Largest length.
        hi: u16,
        /// Inverts the match.
        neg: bool,
    },
    /// `pattern` occurs in the transport payload starting at an offset in `from..=to`
    /// (offsets from the start of the IP packet, as `-m string --from/--to`).
    Payload {
        /// The bytes to find.
        pattern: Vec<u8>,
        /// First offset where the pattern may start.
        from: u16,
        /// Last offset where the pattern may start.
        to: u16,
        /// Inverts the match.
        neg: bool,
    },
    /// A named set of any kind (`-m set --match-set`); `dirs` says which side each
    /// dimension of the set is looked up on.
    Set {
        /// The set or bucket table name.
        name: String,
        /// The side of the packet for each dimension of the set.
        dirs: Vec<Dir>,
        /// Inverts the match.
        neg: bool,
    },
    /// A global token bucket: matches while under `rate` (burst `burst`).
    Limit {
        /// Sustained rate.
        rate: Rate,
        /// Bucket size.
        burst: u32,
    },
    /// One token bucket per key: matches while that key is under `rate` (`hashlimit-upto`).
    HashLimit {
        /// The set or bucket table name.
        name: String,
        /// Sustained rate.
        rate: Rate,
        /// Bucket size.
        burst: u32,
        /// Fields the buckets are keyed by (an IPv6 address is hashed into the key).
        key: HashKey,
    },
}

impl Match {
    /// Whether the match keeps state (token buckets). Stateful matches are evaluated after
    /// every stateless match of their rule passed, so a bucket is only charged by packets that
    /// the rest of the rule selects.
    pub fn is_stateful(&self) -> bool {
        matches!(self, Match::Limit { .. } | Match::HashLimit { .. })
    }
}

/// Which ICMP error (or TCP reset) a `reject` sends. An IPv6 packet gets the ICMPv6
/// destination unreachable (type 1) of the same meaning (RFC 4443 §3.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum RejectWith {
    /// Destination unreachable, port unreachable (ICMP code 3, ICMPv6 code 4): the
    /// iptables and ip6tables default.
    #[default]
    PortUnreachable,
    /// Net unreachable (ICMP code 0; ICMPv6 no route to destination, code 0).
    NetUnreachable,
    /// Host unreachable (ICMP code 1; ICMPv6 address unreachable, code 3).
    HostUnreachable,
    /// Protocol unreachable (ICMP code 2). ICMPv6 has no such code: IPv6 packets get
    /// administratively prohibited.
    ProtoUnreachable,
    /// Communication administratively prohibited (ICMP code 13, ICMPv6 code 1).
    AdminProhibited,
    /// A TCP RST (for TCP packets; others get port unreachable).
    TcpReset,
}

/// The address (and optionally port) range a NAT rule maps to. NAT is IPv4 only: IPv6
/// packets do not traverse the nat table, and a nat-table rule with IPv6 addresses does not
/// validate.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct NatTarget {
    /// Addresses to pick from.
    pub addrs: AddrRange,
    /// Ports to pick from; `None` keeps the port if it is free.
    pub ports: Option<PortRange>,
}

/// What a rule does when it matches.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
#[non_exhaustive]
pub enum Action {
    /// Let the packet through this hook (terminal).
    Accept,
    /// Discard the packet silently (terminal).
    Drop,
    /// Discard the packet and answer the sender (terminal).
    Reject(RejectWith),
    /// Record the packet (rate-limited; see [`crate::LogEvent`]) and go on.
    Log {
        /// Text put in front of the log record.
        prefix: String,
    },
    /// Only count (every rule counts; this one does nothing else) and go on.
    Counter,
    /// Set the packet mark: `mark = (mark & !mask) ^ value`, and go on.
    Mark {
        /// Value compared or set.
        value: u32,
        /// Bits concerned.
        mask: u32,
    },
    /// Evaluate a user chain; come back here if it returns.
    Jump(String),
    /// Evaluate a user chain instead of the rest of this one.
    Goto(String),
    /// Leave the current user chain (in a base chain: apply the policy).
    Return,
    /// Rewrite the source (nat table, postrouting or input).
    Snat(NatTarget),
    /// Rewrite the destination (nat table, prerouting or output).
    Dnat(NatTarget),
    /// Source NAT to the output interface's address (postrouting).
    Masquerade {
        /// Ports to pick from.
        ports: Option<PortRange>,
    },
    /// 1:1 prefix translation: keep the host bits, replace the network bits with `to`'s.
    /// In prerouting/output it maps the destination, in postrouting/input the source.
    Netmap {
        /// The prefix mapped to.
        to: AddrRange,
    },
}

impl Action {
    /// Whether evaluation stops at this action (for the packet, in this hook).
    pub fn is_terminal(&self) -> bool {
        matches!(
            self,
            Action::Accept
                | Action::Drop
                | Action::Reject(_)
                | Action::Snat(_)
                | Action::Dnat(_)
                | Action::Masquerade { .. }
                | Action::Netmap { .. }
        )
    }
}

/// Where in a rule's source text it came from, for error messages and listings.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Origin {
    /// 1-based line, 0 when the rule was built in code.
    pub line: u32,
}

/// One rule: all matches, then the action.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Rule {
    /// Conditions, all of which must hold.
    pub matches: Vec<Match>,
    /// What to do on a match.
    pub action: Action,
    /// Source position.
    pub origin: Origin,
}

impl Rule {
    /// The family the rule's address ranges select: `Some(Ipv4)` if it has IPv4 ranges,
    /// `Some(Ipv6)` if IPv6 ones, `None` if none (the rule matches both families; address
    /// sets hold both). A rule with both kinds does not validate; this then says `Ipv4`.
    pub fn family(&self) -> Option<Family> {
        let (v4, v6) = self.families();
        if v4 {
            Some(Family::Ipv4)
        } else if v6 {
            Some(Family::Ipv6)
        } else {
            None
        }
    }

    /// Whether the rule has IPv4 address ranges, IPv6 ones.
    pub(crate) fn families(&self) -> (bool, bool) {
        let mut out = (false, false);
        for m in &self.matches {
            if let Match::Src { addr, .. } | Match::Dst { addr, .. } = m {
                match addr {
                    AddrMatch::Range(_) => out.0 = true,
                    AddrMatch::Range6(_) => out.1 = true,
                    AddrMatch::Set(_) => {}
                }
            }
        }
        out
    }

    /// A rule from matches and an action.
    pub fn new(matches: Vec<Match>, action: Action) -> Rule {
        Rule {
            matches,
            action,
            origin: Origin::default(),
        }
    }
}

/// The netfilter hooks a base chain attaches to.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Hook {
    /// Every packet arriving, before the routing decision (DNAT happens here).
    Prerouting,
    /// Packets for the gateway itself.
    Input,
    /// Packets routed through the gateway.
    Forward,
    /// Packets the gateway itself sends.
    Output,
    /// Every packet leaving, after routing (SNAT and masquerade happen here).
    Postrouting,
}

impl Hook {
    /// All hooks, in packet order.
    pub const ALL: [Hook; 5] = [
        Hook::Prerouting,
        Hook::Input,
        Hook::Forward,
        Hook::Output,
        Hook::Postrouting,
    ];
    /// A dense index.
    pub const fn index(self) -> usize {
        self as usize
    }
}

/// A base chain's verdict when no rule decides.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Policy {
    /// Let the packet through.
    #[default]
    Accept,
    /// Drop it.
    Drop,
}

/// The two tables.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TableKind {
    /// Filtering: accept, drop, reject, log, mark.
    Filter,
    /// Address translation; only the first packet of a flow traverses it.
    Nat,
}

/// A chain: a base chain (attached to a hook, with a policy) or a user chain (reached by
/// jump or goto).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Chain {
    /// Its name, unique within the table.
    pub name: String,
    /// The hook and default policy of a base chain; `None` for a user chain.
    pub base: Option<(Hook, Policy)>,
    /// Rules in order; the first terminal match decides.
    pub rules: Vec<Rule>,
}

impl Chain {
    /// An empty base chain.
    pub fn base(name: &str, hook: Hook, policy: Policy) -> Chain {
        Chain {
            name: name.to_owned(),
            base: Some((hook, policy)),
            rules: Vec::new(),
        }
    }
    /// An empty user chain.
    pub fn user(name: &str) -> Chain {
        Chain {
            name: name.to_owned(),
            base: None,
            rules: Vec::new(),
        }
    }
}

/// A table: its chains.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Table {
    /// Filter or nat.
    pub kind: TableKind,
    /// Chains, base and user.
    pub chains: Vec<Chain>,
}

impl Table {
    /// The chain called `name`.
    pub fn chain(&self, name: &str) -> Option<&Chain> {
        self.chains.iter().find(|c| c.name == name)
    }
    /// The chain called `name`, writable.
    pub fn chain_mut(&mut self, name: &str) -> Option<&mut Chain> {
        self.chains.iter_mut().find(|c| c.name == name)
    }
}

/// What a named set holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum SetKind {
    /// Addresses and prefixes (ipset `hash:net`), IPv4 and IPv6.
    Addr,
    /// Ports (ipset `bitmap:port`).
    Port,
    /// IPv4 address and port pairs, a service (ipset `hash:ip,port`); IPv6 packets never
    /// match a service set.
    Service,
}

/// A named set declared by a rule set, with its initial content. The content can change
/// at run time through [`crate::Sets`] without recompiling the rules.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct SetDecl {
    /// The set's name.
    pub name: String,
    /// What it holds.
    pub kind: SetKind,
    /// Initial IPv4 address ranges ([`SetKind::Addr`]).
    pub addrs: Vec<AddrRange>,
    /// Initial IPv6 address ranges ([`SetKind::Addr`]).
    pub addrs6: Vec<Addr6Range>,
    /// Initial port ranges ([`SetKind::Port`]).
    pub ports: Vec<PortRange>,
    /// Initial (address, port) pairs ([`SetKind::Service`]).
    pub services: Vec<(Ipv4Addr, u16)>,
}

impl SetDecl {
    /// An empty set.
    pub fn new(name: &str, kind: SetKind) -> SetDecl {
        SetDecl {
            name: name.to_owned(),
            kind,
            addrs: Vec::new(),
            addrs6: Vec::new(),
            ports: Vec::new(),
            services: Vec::new(),
        }
    }
}

/// A whole rule set: a filter table, a nat table and named sets. This is the IR every front
/// end produces; [`crate::Firewall::new`] validates and compiles it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct RuleSet {
    /// The filter table.
    pub filter: Table,
    /// The nat table.
    pub nat: Table,
    /// Named sets.
    pub sets: Vec<SetDecl>,
}

impl Default for RuleSet {
    /// Base chains `INPUT`, `FORWARD`, `OUTPUT` (filter) and `PREROUTING`, `INPUT`,
    /// `OUTPUT`, `POSTROUTING` (nat), all empty with policy accept.
    fn default() -> Self {
        RuleSet {
            filter: Table {
                kind: TableKind::Filter,
                chains: vec![
                    Chain::base("INPUT", Hook::Input, Policy::Accept),
                    Chain::base("FORWARD", Hook::Forward, Policy::Accept),
                    Chain::base("OUTPUT", Hook::Output, Policy::Accept),
                ],
            },
            nat: Table {
                kind: TableKind::Nat,
                chains: vec![
                    Chain::base("PREROUTING", Hook::Prerouting, Policy::Accept),
                    Chain::base("INPUT", Hook::Input, Policy::Accept),
                    Chain::base("OUTPUT", Hook::Output, Policy::Accept),
                    Chain::base("POSTROUTING", Hook::Postrouting, Policy::Accept),
                ],
            },
            sets: Vec::new(),
        }
    }
}

impl RuleSet {
    /// The table of `kind`.
    pub fn table(&self, kind: TableKind) -> &Table {
        match kind {
            TableKind::Filter => &self.filter,
            TableKind::Nat => &self.nat,
        }
    }
    /// The table of `kind`, writable.
    pub fn table_mut(&mut self, kind: TableKind) -> &mut Table {
        match kind {
            TableKind::Filter => &mut self.filter,
            TableKind::Nat => &mut self.nat,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes() {
        let r = AddrRange::prefix(Ipv4Addr::new(10, 1, 2, 3), 8).unwrap();
        assert_eq!((r.lo, r.hi), (0x0a00_0000, 0x0aff_ffff));
        assert_eq!(r.prefix_len(), Some(8));
        assert_eq!(AddrRange::ANY.prefix_len(), Some(0));
        assert_eq!(
            AddrRange::host(Ipv4Addr::new(1, 2, 3, 4)).prefix_len(),
            Some(32)
        );
        assert_eq!(AddrRange { lo: 1, hi: 2 }.prefix_len(), None);
        assert_eq!(AddrRange { lo: 2, hi: 3 }.prefix_len(), Some(31));
        assert!(AddrRange::prefix(Ipv4Addr::UNSPECIFIED, 33).is_none());
        assert_eq!(r.to_string(), "10.0.0.0/8");
    }

    #[test]
    fn v6_prefixes() {
        let a: Ipv6Addr = "2001:db8::1".parse().unwrap();
        let r = Addr6Range::prefix(a, 32).unwrap();
        // RFC 3849: 2001:db8::/32 runs from 2001:db8:: to 2001:db8:ffff:...:ffff.
        assert_eq!(r.lo, u128::from("2001:db8::".parse::<Ipv6Addr>().unwrap()));
        assert_eq!(
            r.hi,
            u128::from(
                "2001:db8:ffff:ffff:ffff:ffff:ffff:ffff"
                    .parse::<Ipv6Addr>()
                    .unwrap()
            )
        );
        assert_eq!(r.prefix_len(), Some(32));
        assert_eq!(r.to_string(), "2001:db8::/32");
        assert_eq!(Addr6Range::ANY.prefix_len(), Some(0));
        assert_eq!(Addr6Range::host(a).prefix_len(), Some(128));
        assert_eq!(Addr6Range::host(a).to_string(), "2001:db8::1");
        assert!(Addr6Range::prefix(a, 129).is_none());
        assert_eq!(Addr6Range { lo: 1, hi: 2 }.prefix_len(), None);
    }
}
