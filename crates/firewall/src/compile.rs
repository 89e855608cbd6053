//! Validation and compilation of a [`RuleSet`] into the form the engine runs: set names
//! resolved, jump targets resolved to indexes, one classifier per chain.

use std::collections::HashMap;
use std::sync::Arc;

use crate::classify::{ClassRule, Classifier, FieldBox};
use crate::error::ValidateError;
use crate::ir::{
    Action, Addr6Range, AddrMatch, AddrRange, Chain, Family, Hook, Match, Policy, PortMatch,
    PortRange, RuleSet, SetKind, TableKind,
};
use crate::sets::{Set, Sets};

/// Chains shorter than this are scanned; longer ones go through a classifier.
/// Rules with conditions beyond the five fields, or after which the walk goes on, are
/// given to the classifier as inexact (`box_is_exact`), so they never hide the rules after
/// them (`long_chain_with_failing_set_rules_reaches_the_final_drop`).
const CLASSIFY_MIN_RULES: usize = 8;
/// The classifier keys on IPv4 5-tuples: a chain's classifier holds only the rules that
/// can match IPv4 packets (IPv6-only rules are left out, so they never match an IPv4 key);
/// IPv6 packets walk the chain's rules in order.
///
/// Deepest nesting of jumps.
pub(crate) const MAX_DEPTH: usize = 16;

#[derive(Debug)]
pub(crate) enum CAddr {
    Range(AddrRange),
    Range6(Addr6Range),
    Set(Arc<Set>),
}

#[derive(Debug)]
pub(crate) enum CPorts {
    Ranges(Vec<PortRange>),
    Set(Arc<Set>),
}

#[derive(Debug)]
pub(crate) enum CMatch {
    InIface(crate::ir::IfaceMatch, bool),
    OutIface(crate::ir::IfaceMatch, bool),
    Src(CAddr, bool),
    Dst(CAddr, bool),
    Proto(u8, bool),
    SrcPort(CPorts, bool),
    DstPort(CPorts, bool),
    Icmp(u8, Option<u8>, bool),
    Icmp6(u8, Option<u8>, bool),
    TcpFlags(u8, u8, bool),
    CtState(crate::ir::CtStates, bool),
    Mark(u32, u32, bool),
    Length(u16, u16, bool),
    Payload(Vec<u8>, u16, u16, bool),
    Set(Arc<Set>, Vec<crate::ir::Dir>, bool),
    /// Index of the rule's token bucket.
    Limit(usize),
    /// Index of the hashlimit table, key fields.
    HashLimit(usize, crate::ir::HashKey),
}

#[derive(Debug)]
pub(crate) enum CAction {
    Plain(Action),
    Jump(usize),
    Goto(usize),
}

#[derive(Debug)]
pub(crate) struct CRule {
    /// The only family the rule matches, if its addresses select one.
    pub family: Option<Family>,
    pub matches: Vec<CMatch>,
    pub stateful: Vec<CMatch>,
    pub action: CAction,
    pub line: u32,
    /// Index into the engine's rule counters.
    pub counter: usize,
}

#[derive(Debug)]
pub(crate) struct CChain {
    pub name: String,
    pub policy: Option<Policy>,
    pub rules: Vec<CRule>,
    pub classifier: Option<Classifier>,
}

#[derive(Debug)]
pub(crate) struct CTable {
    pub chains: Vec<CChain>,
    pub hooks: [Option<usize>; 5],
}

/// A token bucket's configuration.
#[derive(Debug, Clone, Copy)]
pub(crate) struct BucketCfg {
    /// Nanoseconds per token.
    pub ns_per_token: u64,
    pub burst: u32,
}

/// A validated, compiled rule set. Immutable; the engine swaps whole ones.
#[derive(Debug)]
pub struct Compiled {
    pub(crate) filter: CTable,
    pub(crate) nat: CTable,
    pub(crate) rules: usize,
    pub(crate) limits: Vec<BucketCfg>,
    pub(crate) hashlimits: Vec<BucketCfg>,
    pub(crate) source: RuleSet,
}

impl Compiled {
    /// The rule set this was compiled from.
    pub fn rule_set(&self) -> &RuleSet {
        &self.source
    }
    /// Number of rules, all chains.
    pub fn len(&self) -> usize {
        self.rules
    }
    /// Whether there are no rules.
    pub fn is_empty(&self) -> bool {
        self.rules == 0
    }
    pub(crate) fn table(&self, t: TableKind) -> &CTable {
        match t {
            TableKind::Filter => &self.filter,
            TableKind::Nat => &self.nat,
        }
    }
}

fn bucket(rate: &crate::ir::Rate, burst: u32) -> BucketCfg {
    let per = u64::try_from(rate.per.as_nanos()).unwrap_or(u64::MAX);
    BucketCfg {
        ns_per_token: per / u64::from(rate.count.max(1)),
        burst: burst.max(1),
    }
}

fn action_name(a: &Action) -> &'static str {
    match a {
        Action::Snat(_) => "SNAT",
        Action::Dnat(_) => "DNAT",
        Action::Masquerade { .. } => "MASQUERADE",
        Action::Netmap { .. } => "NETMAP",
        Action::Reject(_) => "REJECT",
        _ => "this action",
    }
}

/// Validates and compiles `rs`, declaring its sets in `sets`. Nothing is changed in `sets`
/// unless the whole rule set is valid.
pub(crate) fn compile(rs: &RuleSet, sets: &Sets) -> Result<Compiled, ValidateError> {
    let mut seen = std::collections::HashSet::new();
    for d in &rs.sets {
        if !seen.insert(d.name.as_str()) {
            return Err(ValidateError::Duplicate {
                name: d.name.clone(),
            });
        }
    }
    // Sets are looked up in the new declarations first, then among the existing ones.
    let staged = Sets::default();
    staged.declare(&rs.sets);
    let resolve = |name: &str| staged.get(name).or_else(|| sets.get(name));
    let mut counter = 0usize;
    let mut limits = Vec::new();
    let mut hashlimits: Vec<BucketCfg> = Vec::new();
    let mut hashlimit_names: HashMap<String, usize> = HashMap::new();
    let mut tables = Vec::new();
    for table in [&rs.filter, &rs.nat] {
        let mut names = HashMap::new();
        for (i, c) in table.chains.iter().enumerate() {
            if names.insert(c.name.as_str(), i).is_some() {
                return Err(ValidateError::Duplicate {
                    name: c.name.clone(),
                });
            }
        }
        let mut hooks = [None; 5];
        let mut chains = Vec::new();
        for c in &table.chains {
            if let Some((hook, _)) = c.base {
                hooks[hook.index()] = Some(chains.len());
            }
            let mut rules = Vec::new();
            for r in &c.rules {
                let line = r.origin.line;
                check_action(table.kind, c, &r.action, line)?;
                let (v4, v6) = r.families();
                if v4 && v6 {
                    return Err(ValidateError::Family {
                        line,
                        problem: "a rule cannot mix IPv4 and IPv6 addresses (it would match no packet); write one rule per family",
                    });
                }
                if v6 && table.kind == TableKind::Nat {
                    return Err(ValidateError::Family {
                        line,
                        problem: "NAT applies to IPv4 only: the nat table takes no IPv6 addresses (there is no NAT66)",
                    });
                }
                let mut matches = Vec::new();
                let mut stateful = Vec::new();
                for m in &r.matches {
                    let cm = compile_match(
                        m,
                        line,
                        &resolve,
                        &mut limits,
                        &mut hashlimits,
                        &mut hashlimit_names,
                    )?;
                    if m.is_stateful() {
                        stateful.push(cm);
                    } else {
                        matches.push(cm);
                    }
                }
                let action = match &r.action {
                    Action::Jump(t) | Action::Goto(t) => {
                        let Some(&i) = names.get(t.as_str()) else {
                            return Err(ValidateError::NoSuchChain {
                                line,
                                chain: c.name.clone(),
                                target: t.clone(),
                            });
                        };
                        if table.chains[i].base.is_some() {
                            return Err(ValidateError::ActionNotAllowed {
                                line,
                                chain: c.name.clone(),
                                action: "a jump to a base chain",
                                why: "only user chains can be jumped to",
                            });
                        }
                        if matches!(r.action, Action::Jump(_)) {
                            CAction::Jump(i)
                        } else {
                            CAction::Goto(i)
                        }
                    }
                    a => CAction::Plain(a.clone()),
                };
                rules.push(CRule {
                    family: r.family(),
                    matches,
                    stateful,
                    action,
                    line,
                    counter,
                });
                counter += 1;
            }
            let classifier = if rules.len() >= CLASSIFY_MIN_RULES {
                let v4_capable = c.rules.iter().enumerate();
                let v4_capable = v4_capable.filter(|(_, r)| r.family() != Some(Family::Ipv6));
                let boxes = v4_capable.map(|(i, r)| {
                    let (fields, priority, id) = (field_box(&r.matches), i as u32, i as u32);
                    if box_is_exact(r) {
                        ClassRule::new(fields, priority, id)
                    } else {
                        ClassRule::inexact(fields, priority, id)
                    }
                });
                Classifier::new(boxes).ok()
            } else {
                None
            };
            chains.push(CChain {
                name: c.name.clone(),
                policy: c.base.map(|(_, p)| p),
                rules,
                classifier,
            });
        }
        check_loops(&chains)?;
        tables.push(CTable { chains, hooks });
    }
    let nat = tables.pop();
    let filter = tables.pop();
    let (Some(filter), Some(nat)) = (filter, nat) else {
        return Err(ValidateError::Duplicate {
            name: "table".into(),
        });
    };
    sets.adopt(&staged);
    Ok(Compiled {
        filter,
        nat,
        rules: counter,
        limits,
        hashlimits,
        source: rs.clone(),
    })
}

fn check_action(table: TableKind, c: &Chain, a: &Action, line: u32) -> Result<(), ValidateError> {
    let hook = c.base.map(|(h, _)| h);
    let err = |why| {
        Err(ValidateError::ActionNotAllowed {
            line,
            chain: c.name.clone(),
            action: action_name(a),
            why,
        })
    };
    match (table, a) {
        (
            TableKind::Filter,
            Action::Snat(_) | Action::Dnat(_) | Action::Masquerade { .. } | Action::Netmap { .. },
        ) => err("address translation belongs in the nat table"),
        (TableKind::Nat, Action::Reject(_)) => err("the nat table does not filter"),
        (TableKind::Nat, Action::Dnat(_))
            if matches!(hook, Some(Hook::Postrouting | Hook::Input)) =>
        {
            err("DNAT is for prerouting and output")
        }
        (TableKind::Nat, Action::Snat(_) | Action::Masquerade { .. })
            if matches!(hook, Some(Hook::Prerouting | Hook::Output)) =>
        {
            err("SNAT and MASQUERADE are for postrouting and input")
        }
        (TableKind::Nat, Action::Masquerade { .. }) if hook == Some(Hook::Input) => {
            err("MASQUERADE needs an output interface (postrouting)")
        }
        _ => Ok(()),
    }
}

fn compile_match(
    m: &Match,
    line: u32,
    resolve: &dyn Fn(&str) -> Option<Arc<Set>>,
    limits: &mut Vec<BucketCfg>,
    hashlimits: &mut Vec<BucketCfg>,
    hashlimit_names: &mut HashMap<String, usize>,
) -> Result<CMatch, ValidateError> {
    let set = |name: &str, kind: SetKind| -> Result<Arc<Set>, ValidateError> {
        let s = resolve(name).ok_or_else(|| ValidateError::BadSet {
            line,
            set: name.to_owned(),
            problem: "is not declared",
        })?;
        if s.kind != kind {
            return Err(ValidateError::BadSet {
                line,
                set: name.to_owned(),
                problem: "holds another kind of element",
            });
        }
        Ok(s)
    };
    let addr = |a: &AddrMatch| -> Result<CAddr, ValidateError> {
        Ok(match a {
            AddrMatch::Range(r) => CAddr::Range(*r),
            AddrMatch::Range6(r) => CAddr::Range6(*r),
            AddrMatch::Set(n) => CAddr::Set(set(n, SetKind::Addr)?),
        })
    };
    let ports = |p: &PortMatch| -> Result<CPorts, ValidateError> {
        Ok(match p {
            PortMatch::Ranges(r) => CPorts::Ranges(r.clone()),
            PortMatch::Set(n) => CPorts::Set(set(n, SetKind::Port)?),
        })
    };
    let bad = |problem: String| Err(ValidateError::BadMatch { line, problem });
    Ok(match m {
        Match::InIface { iface, neg } => CMatch::InIface(iface.clone(), *neg),
        Match::OutIface { iface, neg } => CMatch::OutIface(iface.clone(), *neg),
        Match::Src { addr: a, neg } => CMatch::Src(addr(a)?, *neg),
        Match::Dst { addr: a, neg } => CMatch::Dst(addr(a)?, *neg),
        Match::Proto { proto, neg } => CMatch::Proto(*proto, *neg),
        Match::SrcPort { ports: p, neg } => CMatch::SrcPort(ports(p)?, *neg),
        Match::DstPort { ports: p, neg } => CMatch::DstPort(ports(p)?, *neg),
        Match::Icmp { ty, code, neg } => CMatch::Icmp(*ty, *code, *neg),
        Match::Icmp6 { ty, code, neg } => CMatch::Icmp6(*ty, *code, *neg),
        Match::TcpFlags { mask, set, neg } => CMatch::TcpFlags(*mask, *set, *neg),
        Match::CtState { states, neg } => CMatch::CtState(*states, *neg),
        Match::Mark { value, mask, neg } => CMatch::Mark(*value, *mask, *neg),
        Match::Length { lo, hi, neg } => {
            if lo > hi {
                return bad(format!("length range {lo}:{hi} is empty"));
            }
            CMatch::Length(*lo, *hi, *neg)
        }
        Match::Payload {
            pattern,
            from,
            to,
            neg,
        } => {
            if pattern.is_empty() || from > to {
                return bad("string match needs a pattern and --from not above --to".into());
            }
            CMatch::Payload(pattern.clone(), *from, *to, *neg)
        }
        Match::Set { name, dirs, neg } => {
            let s = resolve(name).ok_or_else(|| ValidateError::BadSet {
                line,
                set: name.clone(),
                problem: "is not declared",
            })?;
            let need = if s.kind == SetKind::Service { 2 } else { 1 };
            if dirs.len() < need {
                return bad(format!(
                    "set `{name}` needs {need} direction flag(s), like src,dst"
                ));
            }
            CMatch::Set(s, dirs.clone(), *neg)
        }
        Match::Limit { rate, burst } => {
            if rate.count == 0 || rate.per.is_zero() {
                return bad("a limit needs a non-zero rate".into());
            }
            limits.push(bucket(rate, *burst));
            CMatch::Limit(limits.len() - 1)
        }
        Match::HashLimit {
            name,
            rate,
            burst,
            key,
        } => {
            if rate.count == 0 || rate.per.is_zero() {
                return bad("a hashlimit needs a non-zero rate".into());
            }
            let i = *hashlimit_names.entry(name.clone()).or_insert_with(|| {
                hashlimits.push(bucket(rate, *burst));
                hashlimits.len() - 1
            });
            CMatch::HashLimit(i, *key)
        }
    })
}

/// The five-field box a rule's matches imply: a superset of the packets the rule matches,
/// which is what the classifier needs (the rule's matches are still checked in full).
pub(crate) fn field_box(matches: &[Match]) -> FieldBox {
    let mut b = FieldBox::ANY;
    let mut narrow = |d: usize, lo: u32, hi: u32| {
        b.lo[d] = b.lo[d].max(lo);
        b.hi[d] = b.hi[d].min(hi);
    };
    for m in matches {
        match m {
            Match::Src {
                addr: AddrMatch::Range(r),
                neg: false,
            } => narrow(0, r.lo, r.hi),
            Match::Dst {
                addr: AddrMatch::Range(r),
                neg: false,
            } => narrow(1, r.lo, r.hi),
            Match::Proto { proto, neg: false } => narrow(4, u32::from(*proto), u32::from(*proto)),
            Match::SrcPort {
                ports: PortMatch::Ranges(r),
                neg: false,
            } if !r.is_empty() => {
                let lo = r.iter().map(|p| p.lo).min().unwrap_or(0);
                let hi = r.iter().map(|p| p.hi).max().unwrap_or(u16::MAX);
                narrow(2, u32::from(lo), u32::from(hi));
            }
            Match::DstPort {
                ports: PortMatch::Ranges(r),
                neg: false,
            } if !r.is_empty() => {
                let lo = r.iter().map(|p| p.lo).min().unwrap_or(0);
                let hi = r.iter().map(|p| p.hi).max().unwrap_or(u16::MAX);
                narrow(3, u32::from(lo), u32::from(hi));
            }
            _ => {}
        }
    }
    if !b.is_valid() {
        // Contradictory matches (two disjoint sources): the rule never matches; an empty
        // box is not representable, so keep a box that the full check will reject.
        return FieldBox::ANY;
    }
    b
}

/// Whether a rule is decided by its [`field_box`] alone and ends the chain's walk when it
/// matches, so that the classifier may leave the rules after it out of a region the box
/// covers. Any other match (interfaces, sets, negations, port lists, state, limits) or an
/// action after which the walk goes on (jump, log, counter, mark) makes it inexact.
fn box_is_exact(r: &crate::ir::Rule) -> bool {
    let terminal = matches!(
        r.action,
        Action::Accept
            | Action::Drop
            | Action::Reject(_)
            | Action::Goto(_)
            | Action::Return
            | Action::Snat(_)
            | Action::Dnat(_)
            | Action::Masquerade { .. }
            | Action::Netmap { .. }
    );
    let boxed = r.matches.iter().all(|m| match m {
        Match::Src {
            addr: AddrMatch::Range(_),
            neg: false,
        }
        | Match::Dst {
            addr: AddrMatch::Range(_),
            neg: false,
        }
        | Match::Proto { neg: false, .. } => true,
        // A packet without ports has ports 0 in the key: only a range that leaves 0 out
        // decides as the full check would.
        Match::SrcPort {
            ports: PortMatch::Ranges(r),
            neg: false,
        }
        | Match::DstPort {
            ports: PortMatch::Ranges(r),
            neg: false,
        } => r.len() == 1 && r[0].lo > 0,
        _ => false,
    });
    // Contradictory matches compile to the whole box (see `field_box`): not exact.
    terminal && boxed && (r.matches.is_empty() || field_box(&r.matches) != FieldBox::ANY)
}

/// Rejects jump loops: a depth-first walk over jump and goto edges.
fn check_loops(chains: &[CChain]) -> Result<(), ValidateError> {
    fn visit(
        chains: &[CChain],
        i: usize,
        state: &mut [u8],
        depth: usize,
    ) -> Result<(), ValidateError> {
        if state[i] == 1 || depth > MAX_DEPTH {
            return Err(ValidateError::Loop {
                chain: chains[i].name.clone(),
            });
        }
        if state[i] == 2 {
            return Ok(());
        }
        state[i] = 1;
        for r in &chains[i].rules {
            if let CAction::Jump(t) | CAction::Goto(t) = r.action {
                visit(chains, t, state, depth + 1)?;
            }
        }
        state[i] = 2;
        Ok(())
    }
    let mut state = vec![0u8; chains.len()];
    for i in 0..chains.len() {
        visit(chains, i, &mut state, 0)?;
    }
    Ok(())
}
