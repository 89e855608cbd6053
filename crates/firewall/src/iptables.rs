//! The iptables dialect of a cloud appliance's custom chains.
//!
//! One rule per line, `CHAIN options...` (a leading `-A` is allowed), where `CHAIN` is one
//! of the custom chains `INPUT_CUST`, `FORWARD_CUST`, `OUTPUT_CUST` (filter table) and
//! `PREROUTING_CUST`, `POSTROUTING_CUST`, `MACRO_CUST` (nat table), or a user chain created
//! by a line `-N NAME` (filter) or `-t nat -N NAME`. Blank lines and `#` comments are
//! skipped; double quotes group words (`--log-prefix "fw: "`).
//!
//! The custom chains become user chains reached from the base chains, as on the
//! appliance: filter `INPUT` jumps to `INPUT_CUST`, `FORWARD` to `FORWARD_CUST`, `OUTPUT` to
//! `OUTPUT_CUST`; nat `PREROUTING` to `PREROUTING_CUST`, and nat `POSTROUTING` to
//! `POSTROUTING_CUST` and then `MACRO_CUST`. Every base chain's policy is ACCEPT.
//!
//! ```
//! let rs = gatekit_firewall::iptables::parse(
//!     "PREROUTING_CUST -i eth0 -p tcp --dport 8888 -j DNAT --to 198.51.100.2:8888\n\
//!      MACRO_CUST -o eth0 -s 198.51.100.0/28 -j MASQUERADE\n",
//! )?;
//! assert_eq!(rs.nat.chain("MACRO_CUST").map(|c| c.rules.len()), Some(1));
//! # Ok::<(), gatekit_firewall::ParseError>(())
//! ```
//!
//! The rules are dual-stack, like nftables' `inet` family: `-s`/`-d` (and `--src-range`,
//! `--dst-range`) take IPv4 or IPv6 addresses, and a rule with IPv4 addresses matches IPv4
//! packets only, one with IPv6 addresses IPv6 packets only, one without addresses both.
//! `-p icmp` is ICMPv4; `-p ipv6-icmp` (or `icmpv6`, `icmp6`, `58`) is ICMPv6, with
//! `-m icmp6 --icmpv6-type TYPE[/CODE]`. NAT is IPv4 only: IPv6 packets do not traverse the
//! nat chains (`PREROUTING_CUST`, `POSTROUTING_CUST`, `MACRO_CUST`), so a nat rule without
//! addresses never applies to them; a NAT target with an IPv6 address does not parse, and a
//! nat rule with IPv6 addresses does not validate.

use core::net::{Ipv4Addr, Ipv6Addr};
use core::time::Duration;

use crate::error::ParseError;
use crate::ir::{
    Action, Addr6Range, AddrMatch, AddrRange, Chain, CtStates, Dir, HashKey, Hook, IfaceMatch,
    Match, NatTarget, Origin, Policy, PortMatch, PortRange, Rate, RejectWith, Rule, RuleSet,
    SetDecl, Table, TableKind,
};

const CUSTOM: [(&str, TableKind, &str); 6] = [
    ("INPUT_CUST", TableKind::Filter, "INPUT"),
    ("FORWARD_CUST", TableKind::Filter, "FORWARD"),
    ("OUTPUT_CUST", TableKind::Filter, "OUTPUT"),
    ("PREROUTING_CUST", TableKind::Nat, "PREROUTING"),
    ("POSTROUTING_CUST", TableKind::Nat, "POSTROUTING"),
    ("MACRO_CUST", TableKind::Nat, "POSTROUTING"),
];

/// The rule set the custom chains live in, with no rules yet.
pub fn base_rule_set() -> RuleSet {
    let mut rs = RuleSet {
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
                Chain::base("POSTROUTING", Hook::Postrouting, Policy::Accept),
            ],
        },
        sets: Vec::new(),
    };
    for (name, table, from) in CUSTOM {
        let t = rs.table_mut(table);
        t.chains.push(Chain::user(name));
        if let Some(base) = t.chain_mut(from) {
            base.rules
                .push(Rule::new(Vec::new(), Action::Jump(name.to_owned())));
        }
    }
    rs
}

/// Parses rules in the custom-chain dialect into a rule set. Named sets used by
/// `-m set --match-set` must be declared in the result's `sets` (or be known to the
/// firewall) before it validates; see [`parse_with_sets`].
pub fn parse(text: &str) -> Result<RuleSet, ParseError> {
    parse_with_sets(text, &[])
}

/// [`parse`], with these set declarations added to the rule set.
pub fn parse_with_sets(text: &str, sets: &[SetDecl]) -> Result<RuleSet, ParseError> {
    let mut rs = base_rule_set();
    rs.sets.extend_from_slice(sets);
    for (n, line) in text.lines().enumerate() {
        let n = n as u32 + 1;
        let toks = tokenize(line, n)?;
        if toks.is_empty() {
            continue;
        }
        let mut p = Parser {
            toks,
            i: 0,
            line: n,
            text: line,
        };
        p.line_into(&mut rs)?;
    }
    Ok(rs)
}

#[derive(Debug, Clone)]
struct Tok {
    s: String,
    col: u32,
}

fn tokenize(line: &str, n: u32) -> Result<Vec<Tok>, ParseError> {
    let mut out = Vec::new();
    let mut chars = line.char_indices().peekable();
    while let Some(&(start, c)) = chars.peek() {
        if c.is_whitespace() {
            chars.next();
            continue;
        }
        if c == '#' {
            break;
        }
        let mut s = String::new();
        if c == '"' {
            chars.next();
            let mut closed = false;
            for (_, c) in chars.by_ref() {
                if c == '"' {
                    closed = true;
                    break;
                }
                s.push(c);
            }
            if !closed {
                return Err(ParseError::new(
                    n,
                    start as u32 + 1,
                    "a closing '\"'",
                    "end of line",
                ));
            }
        } else {
            while let Some(&(_, c)) = chars.peek() {
                if c.is_whitespace() {
                    break;
                }
                s.push(c);
                chars.next();
            }
        }
        out.push(Tok {
            s,
            col: start as u32 + 1,
        });
    }
    Ok(out)
}

struct Parser<'a> {
    toks: Vec<Tok>,
    i: usize,
    line: u32,
    text: &'a str,
}

impl Parser<'_> {
    fn err_at(&self, i: usize, expected: &str) -> ParseError {
        match self.toks.get(i) {
            Some(t) => ParseError::new(self.line, t.col, expected, &t.s),
            None => ParseError::new(
                self.line,
                self.text.len() as u32 + 1,
                expected,
                "end of line",
            ),
        }
    }
    fn next(&mut self, expected: &str) -> Result<(usize, String), ParseError> {
        match self.toks.get(self.i) {
            Some(t) => {
                self.i += 1;
                Ok((self.i - 1, t.s.clone()))
            }
            None => Err(self.err_at(self.i, expected)),
        }
    }
    fn peek(&self) -> Option<&str> {
        self.toks.get(self.i).map(|t| t.s.as_str())
    }

    fn line_into(&mut self, rs: &mut RuleSet) -> Result<(), ParseError> {
        let mut table = None;
        if self.peek() == Some("-t") {
            self.i += 1;
            table = Some(self.table()?);
        }
        if self.peek() == Some("-N") {
            self.i += 1;
            let (ti, name) = self.next("a chain name")?;
            let kind = table.unwrap_or(TableKind::Filter);
            let t = rs.table_mut(kind);
            if t.chain(&name).is_some() {
                return Err(self.err_at(ti, "a chain name not already in use"));
            }
            t.chains.push(Chain::user(&name));
            return self.end();
        }
        if self.peek() == Some("-A") {
            self.i += 1;
        }
        let (ci, chain) = self.next("a chain name such as FORWARD_CUST")?;
        let kind = match CUSTOM.iter().find(|(n, ..)| *n == chain) {
            Some((_, t, _)) => *t,
            None => table.unwrap_or(TableKind::Filter),
        };
        if self.peek() == Some("-t") {
            self.i += 1;
            let t = self.table()?;
            if CUSTOM.iter().any(|(n, ..)| *n == chain) && t != kind {
                return Err(self.err_at(self.i - 1, "the table the custom chain belongs to"));
            }
        }
        if rs.table(kind).chain(&chain).is_none() {
            return Err(self.err_at(
                ci,
                "INPUT_CUST, FORWARD_CUST, OUTPUT_CUST, PREROUTING_CUST, POSTROUTING_CUST, MACRO_CUST or a chain created with -N",
            ));
        }
        let rule = self.rule()?;
        if let Some(c) = rs.table_mut(kind).chain_mut(&chain) {
            c.rules.push(rule);
        }
        Ok(())
    }

    fn end(&self) -> Result<(), ParseError> {
        if self.i < self.toks.len() {
            return Err(self.err_at(self.i, "end of line"));
        }
        Ok(())
    }

    fn table(&mut self) -> Result<TableKind, ParseError> {
        let (i, t) = self.next("a table name (filter or nat)")?;
        match t.as_str() {
            "filter" => Ok(TableKind::Filter),
            "nat" => Ok(TableKind::Nat),
            _ => Err(self.err_at(i, "a table name (filter or nat)")),
        }
    }

    fn rule(&mut self) -> Result<Rule, ParseError> {
        let mut matches = Vec::new();
        let mut action = None;
        let mut proto: Option<u8> = None;
        let mut module: Option<String> = None;
        while self.i < self.toks.len() {
            let mut neg = false;
            if self.peek() == Some("!") {
                neg = true;
                self.i += 1;
            }
            let (oi, opt) = self.next("an option")?;
            // `-m MOD ! --opt` puts the `!` after the option name in old syntax too.
            if !neg && self.peek() == Some("!") && opt.starts_with("--") && opt != "--to" {
                neg = true;
                self.i += 1;
            }
            let need_ports = |p: &Self, proto: Option<u8>| {
                if matches!(proto, Some(6 | 17 | 33 | 132 | 136)) {
                    Ok(())
                } else {
                    Err(p.err_at(oi, "`-p tcp` or `-p udp` before a port match"))
                }
            };
            match opt.as_str() {
                "-s" | "--source" | "-d" | "--destination" => {
                    let addr = self.addr_or_prefix()?;
                    matches.push(if opt.starts_with("-s") || opt == "--source" {
                        Match::Src { addr, neg }
                    } else {
                        Match::Dst { addr, neg }
                    });
                }
                "-p" | "--protocol" => {
                    let (i, p) = self.next("a protocol")?;
                    let n = match p.to_ascii_lowercase().as_str() {
                        "tcp" => 6,
                        "udp" => 17,
                        "icmp" => 1,
                        "ipv6-icmp" | "icmpv6" | "icmp6" => 58,
                        "gre" => 47,
                        "esp" => 50,
                        "ah" => 51,
                        "sctp" => 132,
                        "all" => {
                            continue;
                        }
                        other => other.parse::<u8>().map_err(|_| {
                            self.err_at(
                                i,
                                "a protocol (tcp, udp, icmp, ipv6-icmp, all or a number)",
                            )
                        })?,
                    };
                    proto = Some(n);
                    matches.push(Match::Proto { proto: n, neg });
                }
                "--sport" | "--source-port" | "--dport" | "--destination-port" => {
                    need_ports(self, proto)?;
                    let r = self.port_range()?;
                    let ports = PortMatch::Ranges(vec![r]);
                    matches.push(
                        if opt.contains('s') && !opt.contains("dest") && opt != "--dport" {
                            Match::SrcPort { ports, neg }
                        } else {
                            Match::DstPort { ports, neg }
                        },
                    );
                }
                "--sports" | "--dports" | "--source-ports" | "--destination-ports" => {
                    need_ports(self, proto)?;
                    if module.as_deref() != Some("multiport") {
                        return Err(self.err_at(oi, "`-m multiport` before --dports/--sports"));
                    }
                    let (i, list) = self.next("a port list like 22,443,8000:8080")?;
                    let mut v = Vec::new();
                    for part in list.split(',') {
                        v.push(
                            parse_port_range(part).ok_or_else(|| {
                                self.err_at(i, "a port list like 22,443,8000:8080")
                            })?,
                        );
                    }
                    if v.len() > 15 {
                        return Err(self.err_at(i, "at most 15 ports (the multiport limit)"));
                    }
                    let ports = PortMatch::Ranges(v);
                    matches.push(if opt == "--sports" || opt == "--source-ports" {
                        Match::SrcPort { ports, neg }
                    } else {
                        Match::DstPort { ports, neg }
                    });
                }
                "-i" | "--in-interface" | "-o" | "--out-interface" => {
                    let (_, name) = self.next("an interface name")?;
                    let iface = match name.strip_suffix('+') {
                        Some(p) => IfaceMatch {
                            name: p.to_owned(),
                            prefix: true,
                        },
                        None => IfaceMatch {
                            name,
                            prefix: false,
                        },
                    };
                    matches.push(if opt == "-i" || opt == "--in-interface" {
                        Match::InIface { iface, neg }
                    } else {
                        Match::OutIface { iface, neg }
                    });
                }
                "-m" | "--match" => {
                    let (i, m) = self.next("a match module")?;
                    const KNOWN: [&str; 15] = [
                        "icmp6",
                        "icmpv6",
                        "state",
                        "conntrack",
                        "multiport",
                        "set",
                        "icmp",
                        "tcp",
                        "udp",
                        "string",
                        "limit",
                        "hashlimit",
                        "mark",
                        "length",
                        "comment",
                    ];
                    if !KNOWN.contains(&m.as_str()) && m != "iprange" {
                        return Err(self.err_at(i, "a match module: state, conntrack, multiport, set, icmp, icmp6, tcp, udp, string, limit, hashlimit, mark, length, iprange or comment"));
                    }
                    module = Some(m);
                }
                "--state" | "--ctstate" => {
                    let (i, list) = self.next("states like NEW,ESTABLISHED")?;
                    let mut s = CtStates::default();
                    for part in list.split(',') {
                        s = s | match part.to_ascii_uppercase().as_str() {
                            "NEW" => CtStates::NEW,
                            "ESTABLISHED" => CtStates::ESTABLISHED,
                            "RELATED" => CtStates::RELATED,
                            "INVALID" => CtStates::INVALID,
                            _ => {
                                return Err(self
                                    .err_at(i, "states among NEW, ESTABLISHED, RELATED, INVALID"));
                            }
                        };
                    }
                    matches.push(Match::CtState { states: s, neg });
                }
                "--match-set" => {
                    let (_, name) = self.next("a set name")?;
                    let (i, flags) = self.next("direction flags like src or src,dst")?;
                    let mut dirs = Vec::new();
                    for f in flags.split(',') {
                        dirs.push(match f {
                            "src" => Dir::Src,
                            "dst" => Dir::Dst,
                            _ => return Err(self.err_at(i, "direction flags like src or src,dst")),
                        });
                    }
                    matches.push(Match::Set { name, dirs, neg });
                }
                "--icmp-type" => {
                    let (i, t) = self.next("an ICMP type")?;
                    let (ty, code) = parse_icmp_type(&t).ok_or_else(|| {
                        self.err_at(
                            i,
                            "an ICMP type: a number, type/code, or a name such as echo-request",
                        )
                    })?;
                    if proto != Some(1) {
                        return Err(self.err_at(oi, "`-p icmp` before --icmp-type"));
                    }
                    matches.push(Match::Icmp { ty, code, neg });
                }
                "--icmpv6-type" => {
                    let (i, t) = self.next("an ICMPv6 type")?;
                    let (ty, code) = parse_icmp6_type(&t).ok_or_else(|| {
                        self.err_at(
                            i,
                            "an ICMPv6 type: a number, type/code, or a name such as echo-request",
                        )
                    })?;
                    if proto != Some(58) {
                        return Err(self.err_at(oi, "`-p ipv6-icmp` before --icmpv6-type"));
                    }
                    matches.push(Match::Icmp6 { ty, code, neg });
                }
                "--tcp-flags" => {
                    if proto != Some(6) {
                        return Err(self.err_at(oi, "`-p tcp` before --tcp-flags"));
                    }
                    let (i, m) = self.next("a flag list like SYN,ACK,FIN,RST")?;
                    let mask = parse_flags(&m)
                        .ok_or_else(|| self.err_at(i, "a flag list like SYN,ACK,FIN,RST"))?;
                    let (i, s) = self.next("a flag list like SYN")?;
                    let set =
                        parse_flags(&s).ok_or_else(|| self.err_at(i, "a flag list like SYN"))?;
                    matches.push(Match::TcpFlags { mask, set, neg });
                }
                "--syn" => {
                    if proto != Some(6) {
                        return Err(self.err_at(oi, "`-p tcp` before --syn"));
                    }
                    matches.push(Match::TcpFlags {
                        mask: 0x17,
                        set: 0x02,
                        neg,
                    });
                }
                "--string" | "--hex-string" => {
                    let (i, s) = self.next("a string")?;
                    let pattern = if opt == "--string" {
                        s.into_bytes()
                    } else {
                        parse_hex_string(&s)
                            .ok_or_else(|| self.err_at(i, "a hex string like \"|0d 0a|GET\""))?
                    };
                    if pattern.is_empty() {
                        return Err(self.err_at(i, "a non-empty pattern"));
                    }
                    matches.push(Match::Payload {
                        pattern,
                        from: 0,
                        to: 65535,
                        neg,
                    });
                }
                "--from" | "--to" if module.as_deref() == Some("string") => {
                    let (i, v) = self.next("an offset")?;
                    let v: u16 = v
                        .parse()
                        .map_err(|_| self.err_at(i, "an offset 0..=65535"))?;
                    match matches.last_mut() {
                        Some(Match::Payload { from, to, .. }) => {
                            if opt == "--from" {
                                *from = v
                            } else {
                                *to = v
                            }
                        }
                        _ => {
                            return Err(
                                self.err_at(oi, "--string or --hex-string before --from/--to")
                            );
                        }
                    }
                }
                "--algo" => {
                    self.next("bm or kmp")?;
                }
                "--limit" => {
                    let rate = self.rate()?;
                    matches.push(Match::Limit { rate, burst: 5 });
                }
                "--limit-burst" | "--hashlimit-burst" => {
                    let (i, v) = self.next("a burst size")?;
                    let b: u32 = v.parse().map_err(|_| self.err_at(i, "a burst size"))?;
                    match matches.last_mut() {
                        Some(Match::Limit { burst, .. } | Match::HashLimit { burst, .. }) => {
                            *burst = b
                        }
                        _ => {
                            return Err(
                                self.err_at(oi, "--limit or --hashlimit-upto before the burst")
                            );
                        }
                    }
                }
                "--hashlimit-upto" | "--hashlimit" => {
                    let rate = self.rate()?;
                    matches.push(Match::HashLimit {
                        name: String::new(),
                        rate,
                        burst: 5,
                        key: HashKey::default(),
                    });
                }
                "--hashlimit-mode" | "--hashlimit-name" => {
                    let (i, v) = self.next("a value")?;
                    let Some(Match::HashLimit { name, key, .. }) = matches.last_mut() else {
                        return Err(self.err_at(oi, "--hashlimit-upto before its options"));
                    };
                    if opt == "--hashlimit-name" {
                        *name = v;
                    } else {
                        for m in v.split(',') {
                            match m {
                                "srcip" => key.src_ip = true,
                                "dstip" => key.dst_ip = true,
                                "srcport" => key.src_port = true,
                                "dstport" => key.dst_port = true,
                                _ => {
                                    return Err(self
                                        .err_at(i, "modes among srcip, dstip, srcport, dstport"));
                                }
                            }
                        }
                    }
                }
                "--mark" => {
                    let (i, v) = self.next("a mark value[/mask]")?;
                    let (value, mask) =
                        parse_mark(&v).ok_or_else(|| self.err_at(i, "a mark value[/mask]"))?;
                    matches.push(Match::Mark { value, mask, neg });
                }
                "--length" => {
                    let (i, v) = self.next("a length or range lo:hi")?;
                    let r = parse_port_range(&v)
                        .ok_or_else(|| self.err_at(i, "a length or range lo:hi"))?;
                    matches.push(Match::Length {
                        lo: r.lo,
                        hi: r.hi,
                        neg,
                    });
                }
                "--src-range" | "--dst-range" => {
                    let (i, v) = self.next("an address range a.b.c.d-e.f.g.h")?;
                    let addr = match parse_addr_range(&v) {
                        Some(r) => AddrMatch::Range(r),
                        None => AddrMatch::Range6(parse_addr6_range(&v).ok_or_else(|| {
                            self.err_at(
                                i,
                                "an address range a.b.c.d-e.f.g.h or 2001:db8::1-2001:db8::9",
                            )
                        })?),
                    };
                    matches.push(if opt == "--src-range" {
                        Match::Src { addr, neg }
                    } else {
                        Match::Dst { addr, neg }
                    });
                }
                "--comment" => {
                    self.next("a comment")?;
                }
                "-j" | "--jump" | "-g" | "--goto" => {
                    if action.is_some() {
                        return Err(self.err_at(oi, "one -j per rule"));
                    }
                    let goto = opt == "-g" || opt == "--goto";
                    action = Some(self.target(goto)?);
                }
                "--to" | "--to-source" | "--to-destination" | "--to-ports" | "--reject-with"
                | "--log-prefix" | "--log-level" | "--set-mark" => {
                    // Target options, read after the target.
                    let Some(a) = action.as_mut() else {
                        return Err(self.err_at(oi, "-j TARGET before its options"));
                    };
                    self.target_option(oi, &opt, a)?;
                }
                _ => {
                    return Err(self.err_at(
                        oi,
                        "an option such as -s, -d, -p, --dport, -i, -o, -m or -j",
                    ));
                }
            }
            if neg
                && matches!(
                    opt.as_str(),
                    "-j" | "--jump"
                        | "-m"
                        | "--match"
                        | "--to"
                        | "--to-source"
                        | "--to-destination"
                        | "--comment"
                        | "--algo"
                )
            {
                return Err(self.err_at(oi, "an option that can be negated after `!`"));
            }
        }
        let Some(action) = action else {
            return Err(self.err_at(self.toks.len(), "-j TARGET"));
        };
        if let Some(Match::HashLimit { name, .. }) = matches
            .iter()
            .find(|m| matches!(m, Match::HashLimit { name, .. } if name.is_empty()))
        {
            let _ = name;
            return Err(self.err_at(self.toks.len(), "--hashlimit-name NAME"));
        }
        if matches!(
            action,
            Action::Snat(NatTarget {
                addrs: AddrRange { lo: 0, hi: 0 },
                ..
            }) | Action::Dnat(NatTarget {
                addrs: AddrRange { lo: 0, hi: 0 },
                ..
            })
        ) {
            return Err(self.err_at(
                self.toks.len(),
                "--to-source or --to-destination ADDR[:PORT]",
            ));
        }
        if matches!(
            action,
            Action::Netmap {
                to: AddrRange { lo: 0, hi: 0 }
            }
        ) {
            return Err(self.err_at(self.toks.len(), "--to PREFIX"));
        }
        Ok(Rule {
            matches,
            action,
            origin: Origin { line: self.line },
        })
    }

    fn target(&mut self, goto: bool) -> Result<Action, ParseError> {
        let (_, t) = self.next("a target")?;
        let unset = NatTarget {
            addrs: AddrRange { lo: 0, hi: 0 },
            ports: None,
        };
        Ok(match t.as_str() {
            _ if goto => Action::Goto(t),
            "ACCEPT" => Action::Accept,
            "DROP" => Action::Drop,
            "REJECT" => Action::Reject(RejectWith::PortUnreachable),
            "LOG" => Action::Log {
                prefix: String::new(),
            },
            "RETURN" => Action::Return,
            "SNAT" => Action::Snat(unset),
            "DNAT" => Action::Dnat(unset),
            "MASQUERADE" => Action::Masquerade { ports: None },
            "NETMAP" => Action::Netmap {
                to: AddrRange { lo: 0, hi: 0 },
            },
            "MARK" => Action::Mark {
                value: 0,
                mask: u32::MAX,
            },
            _ => Action::Jump(t),
        })
    }

    fn target_option(&mut self, oi: usize, opt: &str, a: &mut Action) -> Result<(), ParseError> {
        let (i, v) = self.next("a value")?;
        let bad = |p: &Self, e: &str| Err(p.err_at(i, e));
        match (opt, a) {
            ("--to" | "--to-source", Action::Snat(t))
            | ("--to" | "--to-destination", Action::Dnat(t)) => match parse_nat_target(&v) {
                Some(n) => *t = n,
                None if is_v6_target(&v) => return bad(self, NO_NAT66),
                None => return bad(self, "ADDR[-ADDR][:PORT[-PORT]]"),
            },
            ("--to-ports", Action::Masquerade { ports }) => {
                match parse_port_range(&v.replace('-', ":")) {
                    Some(r) => *ports = Some(r),
                    None => return bad(self, "PORT[-PORT]"),
                }
            }
            ("--to", Action::Netmap { to }) => match parse_prefix(&v) {
                Some(r) if r.prefix_len().is_some() => *to = r,
                _ if is_v6_target(&v) => return bad(self, NO_NAT66),
                _ => return bad(self, "a prefix like 10.1.0.0/16"),
            },
            ("--reject-with", Action::Reject(w)) => {
                *w = match v.as_str() {
                    "icmp-port-unreachable" | "port-unreach" => RejectWith::PortUnreachable,
                    "icmp-net-unreachable" | "net-unreach" => RejectWith::NetUnreachable,
                    "icmp-host-unreachable" | "host-unreach" => RejectWith::HostUnreachable,
                    "icmp-proto-unreachable" | "proto-unreach" => RejectWith::ProtoUnreachable,
                    "icmp-admin-prohibited" | "admin-prohib" => RejectWith::AdminProhibited,
                    "icmp6-port-unreachable" => RejectWith::PortUnreachable,
                    "icmp6-no-route" | "no-route" => RejectWith::NetUnreachable,
                    "icmp6-addr-unreachable" | "addr-unreach" => RejectWith::HostUnreachable,
                    "icmp6-adm-prohibited" | "adm-prohibited" => RejectWith::AdminProhibited,
                    "tcp-reset" => RejectWith::TcpReset,
                    _ => {
                        return bad(
                            self,
                            "icmp-port-unreachable, icmp-host-unreachable, icmp-net-unreachable, icmp-proto-unreachable, icmp-admin-prohibited, icmp6-port-unreachable, icmp6-no-route, icmp6-addr-unreachable, icmp6-adm-prohibited or tcp-reset",
                        );
                    }
                }
            }
            ("--log-prefix", Action::Log { prefix }) => *prefix = v,
            ("--log-level", Action::Log { .. }) => {}
            ("--set-mark", Action::Mark { value, mask }) => match parse_mark(&v) {
                Some((val, m)) => {
                    *value = val;
                    *mask = m;
                }
                None => return bad(self, "a mark value[/mask]"),
            },
            _ => return Err(self.err_at(oi, "an option of this rule's target")),
        }
        Ok(())
    }

    fn addr_or_prefix(&mut self) -> Result<AddrMatch, ParseError> {
        let (i, v) = self.next("an address or prefix")?;
        if let Some(r) = parse_prefix(&v) {
            return Ok(AddrMatch::Range(r));
        }
        parse_prefix6(&v).map(AddrMatch::Range6).ok_or_else(|| {
            self.err_at(
                i,
                "an IPv4 or IPv6 address or prefix like 10.0.0.0/8 or 2001:db8::/32",
            )
        })
    }

    fn port_range(&mut self) -> Result<PortRange, ParseError> {
        let (i, v) = self.next("a port or range lo:hi")?;
        parse_port_range(&v).ok_or_else(|| self.err_at(i, "a port or range lo:hi"))
    }

    fn rate(&mut self) -> Result<Rate, ParseError> {
        let (i, v) = self.next("a rate like 10/second")?;
        let (n, unit) = v.split_once('/').unwrap_or((v.as_str(), "second"));
        let count: u32 = n
            .parse()
            .ok()
            .filter(|c| *c > 0)
            .ok_or_else(|| self.err_at(i, "a rate like 10/second"))?;
        let per = match unit {
            "s" | "sec" | "second" => Duration::from_secs(1),
            "m" | "min" | "minute" => Duration::from_secs(60),
            "h" | "hour" => Duration::from_secs(3600),
            "d" | "day" => Duration::from_secs(86_400),
            _ => return Err(self.err_at(i, "a rate unit: second, minute, hour or day")),
        };
        Ok(Rate { count, per })
    }
}

fn parse_prefix(s: &str) -> Option<AddrRange> {
    match s.split_once('/') {
        Some((a, l)) => {
            let a: Ipv4Addr = a.parse().ok()?;
            match l.parse::<u8>() {
                Ok(len) => AddrRange::prefix(a, len),
                Err(_) => {
                    let m: Ipv4Addr = l.parse().ok()?;
                    let m = u32::from(m);
                    if m.leading_ones() + m.trailing_zeros() != 32 {
                        return None;
                    }
                    AddrRange::prefix(a, m.leading_ones() as u8)
                }
            }
        }
        None => Some(AddrRange::host(s.parse().ok()?)),
    }
}

/// What a NAT target with an IPv6 address is told.
const NO_NAT66: &str =
    "an IPv4 ADDR[-ADDR][:PORT[-PORT]] (NAT applies to IPv4 only; there is no NAT66)";

/// Whether a NAT target is written with an IPv6 address (`[2001:db8::1]:80`, `2001:db8::1`,
/// `2001:db8::/64`).
fn is_v6_target(s: &str) -> bool {
    let a = match s.strip_prefix('[') {
        Some(r) => r.split(']').next().unwrap_or(r),
        None => s.split(['/', '-']).next().unwrap_or(s),
    };
    a.parse::<Ipv6Addr>().is_ok()
}

fn parse_prefix6(s: &str) -> Option<Addr6Range> {
    match s.split_once('/') {
        Some((a, l)) => Addr6Range::prefix(a.parse().ok()?, l.parse().ok()?),
        None => Some(Addr6Range::host(s.parse().ok()?)),
    }
}

fn parse_addr6_range(s: &str) -> Option<Addr6Range> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (lo, hi) = (
        u128::from(a.parse::<Ipv6Addr>().ok()?),
        u128::from(b.parse::<Ipv6Addr>().ok()?),
    );
    (lo <= hi).then_some(Addr6Range { lo, hi })
}

fn parse_addr_range(s: &str) -> Option<AddrRange> {
    let (a, b) = s.split_once('-').unwrap_or((s, s));
    let (lo, hi) = (
        u32::from(a.parse::<Ipv4Addr>().ok()?),
        u32::from(b.parse::<Ipv4Addr>().ok()?),
    );
    (lo <= hi).then_some(AddrRange { lo, hi })
}

fn parse_port_range(s: &str) -> Option<PortRange> {
    let (a, b) = match s.split_once(':') {
        Some((a, b)) => (
            if a.is_empty() { 0 } else { a.parse().ok()? },
            if b.is_empty() {
                u16::MAX
            } else {
                b.parse().ok()?
            },
        ),
        None => {
            let p = s.parse().ok()?;
            (p, p)
        }
    };
    (a <= b).then_some(PortRange { lo: a, hi: b })
}

fn parse_nat_target(s: &str) -> Option<NatTarget> {
    let (addrs, ports) = match s.split_once(':') {
        Some((a, p)) => (a, Some(p)),
        None => (s, None),
    };
    let addrs = parse_addr_range(addrs)?;
    let ports = match ports {
        Some(p) => Some(parse_port_range(&p.replace('-', ":"))?),
        None => None,
    };
    Some(NatTarget { addrs, ports })
}

fn parse_mark(s: &str) -> Option<(u32, u32)> {
    let num = |x: &str| match x.strip_prefix("0x") {
        Some(h) => u32::from_str_radix(h, 16).ok(),
        None => x.parse().ok(),
    };
    match s.split_once('/') {
        Some((v, m)) => Some((num(v)?, num(m)?)),
        None => Some((num(s)?, u32::MAX)),
    }
}

fn parse_flags(s: &str) -> Option<u8> {
    let mut f = 0u8;
    for part in s.split(',') {
        f |= match part.to_ascii_uppercase().as_str() {
            "FIN" => 0x01,
            "SYN" => 0x02,
            "RST" => 0x04,
            "PSH" => 0x08,
            "ACK" => 0x10,
            "URG" => 0x20,
            "ALL" => 0x3f,
            "NONE" => 0,
            _ => return None,
        };
    }
    Some(f)
}

fn parse_icmp_type(s: &str) -> Option<(u8, Option<u8>)> {
    let named = match s {
        "echo-reply" | "pong" => Some((0, None)),
        "destination-unreachable" => Some((3, None)),
        "network-unreachable" => Some((3, Some(0))),
        "host-unreachable" => Some((3, Some(1))),
        "protocol-unreachable" => Some((3, Some(2))),
        "port-unreachable" => Some((3, Some(3))),
        "fragmentation-needed" => Some((3, Some(4))),
        "source-quench" => Some((4, None)),
        "redirect" => Some((5, None)),
        "echo-request" | "ping" => Some((8, None)),
        "time-exceeded" | "ttl-exceeded" => Some((11, None)),
        "parameter-problem" => Some((12, None)),
        "timestamp-request" => Some((13, None)),
        "timestamp-reply" => Some((14, None)),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    match s.split_once('/') {
        Some((t, c)) => Some((t.parse().ok()?, Some(c.parse().ok()?))),
        None => Some((s.parse().ok()?, None)),
    }
}

/// ICMPv6 type names as ip6tables knows them (RFC 4443, RFC 4861).
fn parse_icmp6_type(s: &str) -> Option<(u8, Option<u8>)> {
    let named = match s {
        "destination-unreachable" => Some((1, None)),
        "no-route" => Some((1, Some(0))),
        "communication-prohibited" => Some((1, Some(1))),
        "beyond-scope" => Some((1, Some(2))),
        "address-unreachable" => Some((1, Some(3))),
        "port-unreachable" => Some((1, Some(4))),
        "failed-policy" => Some((1, Some(5))),
        "reject-route" => Some((1, Some(6))),
        "packet-too-big" => Some((2, None)),
        "time-exceeded" | "ttl-exceeded" => Some((3, None)),
        "ttl-zero-during-transit" => Some((3, Some(0))),
        "ttl-zero-during-reassembly" => Some((3, Some(1))),
        "parameter-problem" => Some((4, None)),
        "bad-header" => Some((4, Some(0))),
        "unknown-header-type" => Some((4, Some(1))),
        "unknown-option" => Some((4, Some(2))),
        "echo-request" | "ping" => Some((128, None)),
        "echo-reply" | "pong" => Some((129, None)),
        "router-solicitation" => Some((133, None)),
        "router-advertisement" => Some((134, None)),
        "neighbour-solicitation" | "neighbor-solicitation" => Some((135, None)),
        "neighbour-advertisement" | "neighbor-advertisement" => Some((136, None)),
        "redirect" => Some((137, None)),
        _ => None,
    };
    if named.is_some() {
        return named;
    }
    match s.split_once('/') {
        Some((t, c)) => Some((t.parse().ok()?, Some(c.parse().ok()?))),
        None => Some((s.parse().ok()?, None)),
    }
}

/// `|0d 0a|GET` style: bytes between bars in hex, the rest literal.
fn parse_hex_string(s: &str) -> Option<Vec<u8>> {
    let mut out = Vec::new();
    let mut hex = false;
    let mut digits = String::new();
    for c in s.chars() {
        if c == '|' {
            if hex && !digits.is_empty() {
                return None;
            }
            hex = !hex;
            continue;
        }
        if hex {
            if c.is_whitespace() {
                continue;
            }
            digits.push(c);
            if digits.len() == 2 {
                out.push(u8::from_str_radix(&digits, 16).ok()?);
                digits.clear();
            }
        } else {
            let mut b = [0u8; 4];
            out.extend_from_slice(c.encode_utf8(&mut b).as_bytes());
        }
    }
    (!hex).then_some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn one(text: &str, table: TableKind, chain: &str) -> Rule {
        let rs = parse(text).unwrap_or_else(|e| panic!("{e}"));
        rs.table(table).chain(chain).unwrap().rules[0].clone()
    }

    #[test]
    fn issue_examples() {
        let r = one(
            "PREROUTING_CUST -i eth0 -p tcp --dport 8888 -j DNAT --to 198.51.100.2:8888",
            TableKind::Nat,
            "PREROUTING_CUST",
        );
        assert_eq!(
            r.matches,
            vec![
                Match::InIface {
                    iface: IfaceMatch {
                        name: "eth0".into(),
                        prefix: false
                    },
                    neg: false
                },
                Match::Proto {
                    proto: 6,
                    neg: false
                },
                Match::DstPort {
                    ports: PortMatch::Ranges(vec![PortRange::single(8888)]),
                    neg: false
                },
            ]
        );
        assert_eq!(
            r.action,
            Action::Dnat(NatTarget {
                addrs: AddrRange::host(Ipv4Addr::new(198, 51, 100, 2)),
                ports: Some(PortRange::single(8888))
            })
        );
        let r = one(
            "MACRO_CUST -o eth0 -s 198.51.100.0/28 -j MASQUERADE",
            TableKind::Nat,
            "MACRO_CUST",
        );
        assert_eq!(r.action, Action::Masquerade { ports: None });
        assert_eq!(
            r.matches[1],
            Match::Src {
                addr: AddrMatch::Range(AddrRange {
                    lo: 0xc633_6400,
                    hi: 0xc633_640f
                }),
                neg: false
            }
        );
        let r = one(
            "FORWARD_CUST -s 10.0.0.0/8 -p tcp -m multiport --dports 22,443 -m state --state NEW -j ACCEPT",
            TableKind::Filter,
            "FORWARD_CUST",
        );
        assert_eq!(
            r.matches[2],
            Match::DstPort {
                ports: PortMatch::Ranges(vec![PortRange::single(22), PortRange::single(443)]),
                neg: false
            }
        );
        assert_eq!(
            r.matches[3],
            Match::CtState {
                states: CtStates::NEW,
                neg: false
            }
        );
        assert_eq!(r.action, Action::Accept);
    }

    #[test]
    fn more_options() {
        let r = one(
            "INPUT_CUST ! -s 192.0.2.0/24 -p tcp --tcp-flags SYN,ACK SYN -m string --hex-string \"|47 45|T\" --from 40 --to 80 -m hashlimit --hashlimit-upto 5/sec --hashlimit-burst 10 --hashlimit-mode srcip --hashlimit-name web -j LOG --log-prefix \"web: \"",
            TableKind::Filter,
            "INPUT_CUST",
        );
        assert!(matches!(r.matches[0], Match::Src { neg: true, .. }));
        assert_eq!(
            r.matches[2],
            Match::TcpFlags {
                mask: 0x12,
                set: 0x02,
                neg: false
            }
        );
        assert_eq!(
            r.matches[3],
            Match::Payload {
                pattern: b"GET".to_vec(),
                from: 40,
                to: 80,
                neg: false
            }
        );
        assert!(
            matches!(&r.matches[4], Match::HashLimit { name, burst: 10, key: HashKey { src_ip: true, .. }, .. } if name == "web")
        );
        assert_eq!(
            r.action,
            Action::Log {
                prefix: "web: ".into()
            }
        );
        let r = one(
            "OUTPUT_CUST -p icmp -m icmp --icmp-type echo-request -m limit --limit 1/min -j REJECT --reject-with icmp-admin-prohibited",
            TableKind::Filter,
            "OUTPUT_CUST",
        );
        assert_eq!(
            r.matches[1],
            Match::Icmp {
                ty: 8,
                code: None,
                neg: false
            }
        );
        assert_eq!(r.action, Action::Reject(RejectWith::AdminProhibited));
        let r = one(
            "POSTROUTING_CUST -s 10.0.0.0/24 -j NETMAP --to 192.0.2.0/24",
            TableKind::Nat,
            "POSTROUTING_CUST",
        );
        assert_eq!(
            r.action,
            Action::Netmap {
                to: AddrRange {
                    lo: 0xc000_0200,
                    hi: 0xc000_02ff
                }
            }
        );
        let rs = parse("-N web\nFORWARD_CUST -p tcp --dport 80 -j web\nweb -m set --match-set blocked src -j DROP").unwrap();
        assert_eq!(rs.filter.chain("web").unwrap().rules.len(), 1);
    }

    #[test]
    fn errors_point_at_the_token() {
        let e = parse("FORWARD_CUST -s 10.0.0.0/8 -p tcp\n\nFORWARD_CUST --dport 22 -j ACCEPT")
            .unwrap_err();
        assert_eq!((e.line, e.column), (1, 34));
        assert_eq!(e.expected, "-j TARGET");
        let e = parse("INPUT_CUST -p tcp --dport 22 -j ACCEPT\nFORWARD_CUST --dport 22 -j ACCEPT")
            .unwrap_err();
        assert_eq!((e.line, e.column), (2, 14));
        assert!(e.to_string().contains("-p tcp"), "{e}");
        let e = parse("FOO -j ACCEPT").unwrap_err();
        assert_eq!((e.line, e.column), (1, 1));
        let e = parse("INPUT_CUST -s 10.0.0.300 -j DROP").unwrap_err();
        assert_eq!((e.line, e.column, e.found.as_str()), (1, 15, "10.0.0.300"));
        let e = parse("PREROUTING_CUST -p tcp -j DNAT --to 1.2.3.4:99999").unwrap_err();
        assert_eq!(e.column, 37);
        let e = parse("INPUT_CUST --log-prefix \"unterminated").unwrap_err();
        assert_eq!(e.expected, "a closing '\"'");
        let e = parse("INPUT_CUST -s 2001:db8::/129 -j DROP").unwrap_err();
        assert_eq!(
            (e.line, e.column, e.found.as_str()),
            (1, 15, "2001:db8::/129")
        );
        assert!(e.expected.contains("IPv6"), "{e}");
        let e = parse("INPUT_CUST -p icmp --icmpv6-type echo-request -j DROP").unwrap_err();
        assert_eq!(
            (e.column, e.expected.as_str()),
            (20, "`-p ipv6-icmp` before --icmpv6-type")
        );
        let e =
            parse("PREROUTING_CUST -p tcp -j DNAT --to-destination [2001:db8::1]:80").unwrap_err();
        assert_eq!(e.column, 49);
        assert!(e.expected.contains("NAT applies to IPv4 only"), "{e}");
        let e = parse("POSTROUTING_CUST -j NETMAP --to 2001:db8::/64").unwrap_err();
        assert!(e.expected.contains("NAT applies to IPv4 only"), "{e}");
    }

    #[test]
    fn ipv6_options() {
        let r = one(
            "FORWARD_CUST ! -s 2001:db8::/32 -d 2001:db8:1::5 -p ipv6-icmp -m icmp6 --icmpv6-type echo-request -j REJECT --reject-with icmp6-adm-prohibited",
            TableKind::Filter,
            "FORWARD_CUST",
        );
        let net: Ipv6Addr = "2001:db8::".parse().unwrap();
        let host: Ipv6Addr = "2001:db8:1::5".parse().unwrap();
        assert_eq!(
            r.matches,
            vec![
                Match::Src {
                    addr: AddrMatch::Range6(Addr6Range::prefix(net, 32).unwrap()),
                    neg: true
                },
                Match::Dst {
                    addr: AddrMatch::Range6(Addr6Range::host(host)),
                    neg: false
                },
                Match::Proto {
                    proto: 58,
                    neg: false
                },
                Match::Icmp6 {
                    ty: 128,
                    code: None,
                    neg: false
                },
            ]
        );
        assert_eq!(r.family(), Some(crate::ir::Family::Ipv6));
        assert_eq!(r.action, Action::Reject(RejectWith::AdminProhibited));
        let r = one(
            "INPUT_CUST -p icmpv6 --icmpv6-type 1/4 -m iprange --src-range 2001:db8::1-2001:db8::9 -j DROP",
            TableKind::Filter,
            "INPUT_CUST",
        );
        assert_eq!(
            r.matches[1],
            Match::Icmp6 {
                ty: 1,
                code: Some(4),
                neg: false
            }
        );
        assert!(
            matches!(r.matches[2], Match::Src { addr: AddrMatch::Range6(a), .. } if a.hi - a.lo == 8)
        );
        let r = one(
            "INPUT_CUST -p 58 -j ACCEPT",
            TableKind::Filter,
            "INPUT_CUST",
        );
        assert_eq!(r.family(), None);
    }
}
