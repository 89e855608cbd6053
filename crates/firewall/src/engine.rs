//! The engine: conntrack, the nat and filter tables at their hooks, and the rewriting of
//! packets in place.

use std::collections::{HashMap, VecDeque};
use std::hash::{BuildHasher, RandomState};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};

use gatekit_packet::{
    Action as StageAction, DropCounters, DropReason, Instant, Meta, PacketBuf, PortId, Stage,
};

use crate::compile::{
    BucketCfg, CAction, CAddr, CChain, CMatch, CPorts, CRule, Compiled, MAX_DEPTH, compile,
};
use crate::conntrack::{
    Conn, ConnStats, ConnTrack, Direction, FlowKey, FlowTuple, ProtoState, TcpState, Tuple, Tuple6,
};
use crate::error::ValidateError;
use crate::headers::{
    self, PktInfo, build_reject, icmp_inner, icmp6_inner, is_icmp_error, is_icmp6_error,
    parse_ip_into, rewrite, tuple_of, tuple6_of,
};
use crate::ir::{
    Action, CtStates, Dir, Family, Hook, NatTarget, Policy, RejectWith, RuleSet, TableKind,
};
use crate::sets::Sets;

/// Where a packet goes after the routing decision, as the caller's router says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Route {
    /// To the gateway itself.
    Local,
    /// Out of this port.
    Out(PortId),
    /// Nowhere.
    Unreachable,
}

/// Where a packet comes from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Source {
    /// Received on this port.
    Port(PortId),
    /// Sent by the gateway itself.
    Local,
}

/// The engine's decision for one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Let it go where the route says (the packet may have been translated in place).
    Accept(Route),
    /// Drop it, for this reason (counted).
    Drop(DropReason),
    /// The buffer now holds the answer of a `reject` (an ICMP error or a TCP RST), to be
    /// sent back toward the packet's source.
    Reject,
}

/// A log record from a `log` action.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogEvent {
    /// When.
    pub at: Instant,
    /// The rule's prefix text.
    pub prefix: String,
    /// The table and chain of the rule.
    pub table: TableKind,
    /// Chain name.
    pub chain: String,
    /// Source line of the rule (0 if built in code).
    pub line: u32,
    /// The packet's tuple.
    pub tuple: FlowTuple,
    /// Its IP length.
    pub len: u16,
}

/// Engine counters (drops are in [`Firewall::drops`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct FirewallStats {
    /// Packets processed.
    pub packets: u64,
    /// Packets accepted.
    pub accepted: u64,
    /// Packets rejected with an answer.
    pub rejected: u64,
    /// Packets whose addresses or ports were translated.
    pub translated: u64,
    /// Log records kept.
    pub logged: u64,
    /// Log records suppressed by the log rate limit or a full log queue.
    pub log_suppressed: u64,
    /// Rule set swaps taken up.
    pub reloads: u64,
    /// Packets of established flows that took the remembered path of the flow's previous
    /// packet (see [`Config::flow_cache`]); they are also counted in `packets` and
    /// `accepted`.
    pub fast_path: u64,
}

/// Tuning of a [`Firewall`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Config {
    /// Most tracked flows, IPv4 and IPv6 together.
    pub conntrack_capacity: usize,
    /// Log records per second, over all `log` rules (burst of the same size).
    pub log_per_second: u32,
    /// Log records kept until [`Firewall::drain_log`].
    pub log_queue: usize,
    /// Most keys per hashlimit table.
    pub hashlimit_keys: usize,
    /// Flows examined per [`Firewall::handle_timeout`] call.
    pub sweep_budget: usize,
    /// Remember the path of the last accepted packets of established TCP and UDP flows (the last
    /// two of each family), so that the next packet of the same flow (same tuple, TCP flags, input
    /// port and mark; no SYN, FIN or RST) skips the connection-table hash and the filter chains
    /// when nothing in them can tell it apart: the filter table has no length, payload, set or
    /// rate-limit match (sets change at run time, whether matched with `-m set` or named as
    /// addresses or ports) and no `LOG` rule, and the flow is not translated. The packet still
    /// updates its flow and the counters of the rules its predecessor matched, so every counter and
    /// verdict is what the full walk gives. Bursts of one flow (a TCP segment train from a TSO
    /// super-packet, a UDP GRO batch) are the case it is for.
    pub flow_cache: bool,
}

impl Default for Config {
    fn default() -> Self {
        Config {
            conntrack_capacity: 262_144,
            log_per_second: 10,
            log_queue: 1024,
            hashlimit_keys: 65_536,
            sweep_budget: 1024,
            flow_cache: true,
        }
    }
}

/// A handle to swap the rule set of one or many engines atomically. Each engine picks the
/// new set up before its next packet; no packet sees half of one and half of another.
#[derive(Debug, Clone)]
pub struct RulesHandle {
    inner: Arc<(RwLock<Arc<Compiled>>, AtomicU64)>,
    sets: Sets,
}

impl RulesHandle {
    /// Validates and compiles `rs` and, if it is valid, makes it the running set. On error
    /// nothing changes.
    pub fn swap(&self, rs: &RuleSet) -> Result<(), ValidateError> {
        let compiled = Arc::new(compile(rs, &self.sets)?);
        let mut w = self.inner.0.write().unwrap_or_else(|e| e.into_inner());
        *w = compiled;
        self.inner.1.fetch_add(1, Ordering::Release);
        Ok(())
    }
    /// The running rule set.
    pub fn current(&self) -> Arc<Compiled> {
        self.inner
            .0
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
    /// The named sets, updatable at run time.
    pub fn sets(&self) -> &Sets {
        &self.sets
    }
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: u32,
    last: Instant,
}

impl Bucket {
    fn full(cfg: &BucketCfg, now: Instant) -> Bucket {
        Bucket {
            tokens: cfg.burst,
            last: now,
        }
    }
    /// Takes a token if there is one.
    fn take(&mut self, cfg: &BucketCfg, now: Instant) -> bool {
        let elapsed = now.as_nanos().saturating_sub(self.last.as_nanos());
        let new = elapsed / cfg.ns_per_token.max(1);
        if new > 0 {
            self.tokens = (u64::from(self.tokens) + new).min(u64::from(cfg.burst)) as u32;
            self.last = Instant::from_nanos(self.last.as_nanos() + new * cfg.ns_per_token);
        }
        if self.tokens > 0 {
            self.tokens -= 1;
            true
        } else {
            false
        }
    }
}

#[derive(Debug, Clone)]
struct Iface {
    /// Shared, so that naming the interfaces of a packet for its rule walk is a reference
    /// count, not an allocation.
    name: Arc<str>,
    addr: Option<Ipv4Addr>,
}

/// What rule evaluation of one hook decided.
enum Outcome {
    Policy(Policy),
    Accept,
    Drop,
    Reject(RejectWith),
    Nat(Action),
}

/// The packet as the matches see it.
struct View<'a> {
    info: &'a PktInfo,
    data: &'a [u8],
    ct: CtStates,
    iif: Option<&'a str>,
    oif: Option<&'a str>,
}

/// What the filter walk of one packet goes by, besides its bytes (see [`Firewall::filter`]).
struct Filtered<'a> {
    from: Source,
    route: Route,
    info: &'a PktInfo,
    ct: CtStates,
    iif: Option<&'a str>,
    oif: Option<&'a str>,
}

/// A stateful dual-stack firewall: connection tracking, a nat and a filter table, NAT with
/// incremental checksum updates (IPv4), `reject` answers, rate limits and rate-limited
/// logging.
///
/// IPv6 packets are parsed through their extension headers, filtered by the same chains
/// (rules select their family by their addresses, as in nftables' `inet` family) and
/// tracked in a connection table of their own. They do not traverse the nat table: there
/// is no NAT66, so a nat rule without addresses never applies to IPv6.
///
/// Sans-IO: the caller passes `now` and a router; the engine keeps per-worker state
/// (conntrack, counters, buckets) and shares the compiled rules through a
/// [`RulesHandle`].
#[derive(Debug)]
pub struct Firewall {
    handle: RulesHandle,
    rules: Arc<Compiled>,
    generation: u64,
    ct: ConnTrack,
    ct6: ConnTrack<Tuple6>,
    hash_state: RandomState,
    cfg: Config,
    ifaces: Vec<Option<Iface>>,
    counters: Vec<[u64; 2]>,
    limits: Vec<Option<Bucket>>,
    hashlimits: Vec<HashMap<u64, Bucket>>,
    log: VecDeque<LogEvent>,
    log_bucket: Bucket,
    stats: FirewallStats,
    drops: DropCounters,
    /// Whether the filter table of the running rules can be remembered per flow.
    filter_invariant: bool,
    /// The remembered paths of IPv4 flows (see [`Config::flow_cache`]).
    memo: Memo<Tuple>,
    /// The remembered paths of IPv6 flows.
    memo6: Memo<Tuple6>,
    /// The counters the current filter walk touched, while one is being recorded.
    trail: Trail,
}

/// Flows remembered at once, per family: the two directions of one connection.
const MEMO_SLOTS: usize = 2;
/// Most rules a remembered path may have matched (counting rules, jumps, the verdict).
const TRAIL_MAX: usize = 6;

/// The path an accepted packet of an established, untranslated flow took.
#[derive(Debug, Clone, Copy)]
struct FlowMemo<K> {
    tuple: K,
    from: Source,
    flags: u8,
    mark_in: u32,
    mark_out: u32,
    id: u32,
    dir: Direction,
    route: Route,
    trail: Trail,
}

/// Rule counters touched by one hook walk; `len > TRAIL_MAX` means too many to replay.
#[derive(Debug, Clone, Copy, Default)]
struct Trail {
    on: bool,
    len: usize,
    counters: [u32; TRAIL_MAX],
}

impl Trail {
    #[inline]
    fn push(&mut self, counter: usize) {
        if self.on {
            if let Some(c) = self.counters.get_mut(self.len) {
                *c = counter as u32;
            }
            self.len += 1;
        }
    }
    fn entries(&self) -> Option<&[u32]> {
        self.counters.get(..self.len)
    }
}

/// Whether a flow is in a state that a packet without SYN, FIN or RST leaves as it is, as
/// an established flow (ESTABLISHED to the rules) without translation.
fn steady<K: MemoKey>(c: &Conn<K>) -> bool {
    let established = match c.proto {
        ProtoState::Tcp { state, .. } => state == TcpState::Established && c.replied,
        ProtoState::Other => c.original.protocol() == headers::UDP && c.replied,
    };
    established && !K::translated(c)
}

/// A flow tuple whose paths can be remembered.
trait MemoKey: FlowKey {
    /// Whether the flow's addresses or ports are translated.
    fn translated(c: &Conn<Self>) -> bool;
}

impl MemoKey for Tuple {
    fn translated(c: &Conn<Tuple>) -> bool {
        c.src_nat() || c.dst_nat()
    }
}

impl MemoKey for Tuple6 {
    /// There is no NAT66.
    fn translated(_: &Conn<Tuple6>) -> bool {
        false
    }
}

/// The remembered paths of one family: the two directions of one connection.
#[derive(Debug, Clone, Copy)]
struct Memo<K> {
    slots: [Option<FlowMemo<K>>; MEMO_SLOTS],
    /// The slot the next remembered path replaces.
    next: usize,
}

impl<K> Default for Memo<K> {
    fn default() -> Self {
        Memo {
            slots: core::array::from_fn(|_| None),
            next: 0,
        }
    }
}

impl<K: MemoKey> Memo<K> {
    /// Keeps the path of an accepted packet of an established flow, if the next packet of
    /// the flow can take it: a TCP or UDP flow without translation in a state that packets
    /// without SYN, FIN or RST leave as it is, and a short enough walk.
    fn remember(&mut self, ct: &ConnTrack<K>, m: FlowMemo<K>) {
        if m.trail.entries().is_none() || m.flags & 0x07 != 0 {
            return;
        }
        if !ct.get(m.id).is_some_and(steady) {
            return;
        }
        let slot = self
            .slots
            .iter()
            .position(|s| s.is_some_and(|s| s.tuple == m.tuple))
            .unwrap_or(self.next);
        if let Some(s) = self.slots.get_mut(slot) {
            *s = Some(m);
        }
        self.next = (slot + 1) % MEMO_SLOTS;
    }

    /// The verdict for a packet that follows a remembered path, with the flow and the rule
    /// counters updated as the full walk would; `None` if it does not follow one. `route`
    /// makes the routing decision for the packet.
    #[allow(clippy::too_many_arguments)]
    fn replay(
        &self,
        ct: &mut ConnTrack<K>,
        counters: &mut [[u64; 2]],
        info: &PktInfo,
        tuple: &K,
        mark: &mut u32,
        from: Source,
        route: impl FnOnce() -> Route,
        now: Instant,
    ) -> Option<Route> {
        let m = *self.slots.iter().flatten().find(|m| {
            m.tuple == *tuple
                && m.flags == info.tcp_flags
                && m.from == from
                && m.mark_in == *mark
                && info.has_ports
                && info.icmp.is_none()
        })?;
        // The flow must still be there, unexpired, seen the same way, and still in a state
        // the packet leaves alone: it may have been removed and made again since.
        let c = ct.get(m.id)?;
        let same = match m.dir {
            Direction::Original => c.original == *tuple,
            Direction::Reply => c.reply == *tuple,
        };
        if !same || c.expires <= now || !steady(c) {
            return None;
        }
        if route() != m.route {
            return None;
        }
        let t = ct.timeouts;
        let c = ct.get_mut(m.id)?;
        if !c.update(m.dir, info.tcp_flags, info.total, &t, now) {
            // Not reached: the remembered state takes any packet without SYN, FIN or RST.
            ct.count_invalid();
            return None;
        }
        let len = info.total as u64;
        for &k in m.trail.entries()? {
            if let Some(c) = counters.get_mut(k as usize) {
                c[0] += 1;
                c[1] += len;
            }
        }
        *mark = m.mark_out;
        Some(m.route)
    }
}

/// Whether every packet of a flow meets the same fate in `t` as the one before it, given
/// the same tuple, TCP flags, ports, mark and conntrack state: no rule looks at what
/// differs between them (length, payload), at state outside the flow (sets, which change
/// at run time; rate limits) or has a per-packet effect (`LOG`).
fn table_is_flow_invariant(t: &crate::compile::CTable) -> bool {
    t.chains.iter().flat_map(|c| &c.rules).all(|r| {
        let plain = r.matches.iter().chain(&r.stateful).all(|m| {
            !matches!(
                m,
                CMatch::Length(..)
                    | CMatch::Payload(..)
                    | CMatch::Set(..)
                    | CMatch::Src(CAddr::Set(_), _)
                    | CMatch::Dst(CAddr::Set(_), _)
                    | CMatch::SrcPort(CPorts::Set(_), _)
                    | CMatch::DstPort(CPorts::Set(_), _)
                    | CMatch::Limit(..)
                    | CMatch::HashLimit(..)
            )
        });
        plain && !matches!(r.action, CAction::Plain(Action::Log { .. }))
    })
}

impl Firewall {
    /// An engine running `rs`, with default tuning.
    pub fn new(rs: &RuleSet) -> Result<Firewall, ValidateError> {
        Firewall::with_config(rs, Config::default())
    }

    /// An engine running `rs`.
    pub fn with_config(rs: &RuleSet, cfg: Config) -> Result<Firewall, ValidateError> {
        let sets = Sets::default();
        let compiled = Arc::new(compile(rs, &sets)?);
        let handle = RulesHandle {
            inner: Arc::new((RwLock::new(compiled), AtomicU64::new(0))),
            sets,
        };
        Ok(Firewall::from_handle(handle, cfg))
    }

    /// Another engine (for another worker) sharing `handle`'s rules and sets, with its own
    /// connection table.
    pub fn from_handle(handle: RulesHandle, cfg: Config) -> Firewall {
        let rules = handle.current();
        let generation = handle.inner.1.load(Ordering::Acquire);
        let mut fw = Firewall {
            handle,
            rules,
            generation,
            ct: ConnTrack::new(cfg.conntrack_capacity),
            ct6: ConnTrack::growing(cfg.conntrack_capacity),
            hash_state: RandomState::new(),
            cfg,
            ifaces: Vec::new(),
            counters: Vec::new(),
            limits: Vec::new(),
            hashlimits: Vec::new(),
            log: VecDeque::new(),
            log_bucket: Bucket {
                tokens: cfg.log_per_second,
                last: Instant::ZERO,
            },
            stats: FirewallStats::default(),
            drops: DropCounters::default(),
            filter_invariant: false,
            memo: Memo::default(),
            memo6: Memo::default(),
            trail: Trail::default(),
        };
        fw.reset_state();
        fw
    }

    fn reset_state(&mut self) {
        self.counters = vec![[0; 2]; self.rules.len()];
        self.limits = vec![None; self.rules.limits.len()];
        self.hashlimits = vec![HashMap::new(); self.rules.hashlimits.len()];
        self.filter_invariant = self.cfg.flow_cache && table_is_flow_invariant(&self.rules.filter);
        self.memo = Memo::default();
        self.memo6 = Memo::default();
    }

    /// The handle that swaps this engine's rules and updates its sets.
    pub fn handle(&self) -> &RulesHandle {
        &self.handle
    }

    /// Replaces the rule set (validated first; on error the running set stays). Flows and
    /// their NAT bindings are kept.
    pub fn replace(&mut self, rs: &RuleSet) -> Result<(), ValidateError> {
        self.handle.swap(rs)?;
        self.refresh();
        Ok(())
    }

    /// The named sets.
    pub fn sets(&self) -> &Sets {
        &self.handle.sets
    }

    /// Names a port (for `-i`/`-o` matches) and gives its address (for masquerade).
    pub fn set_iface(&mut self, port: PortId, name: &str, addr: Option<Ipv4Addr>) {
        let i = usize::from(port.0);
        if self.ifaces.len() <= i {
            self.ifaces.resize(i + 1, None);
        }
        self.ifaces[i] = Some(Iface {
            name: Arc::from(name),
            addr,
        });
        self.memo = Memo::default();
        self.memo6 = Memo::default();
    }

    /// Counters.
    pub fn stats(&self) -> FirewallStats {
        self.stats
    }
    /// Drops by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }
    /// Connection table counters, IPv4 and IPv6 flows together.
    pub fn conn_stats(&self) -> ConnStats {
        let (a, b) = (self.ct.stats(), self.ct6.stats());
        ConnStats {
            inserted: a.inserted + b.inserted,
            expired: a.expired + b.expired,
            evicted: a.evicted + b.evicted,
            refused: a.refused + b.refused,
            invalid: a.invalid + b.invalid,
        }
    }
    /// The connection table of IPv4 flows.
    pub fn conntrack(&self) -> &ConnTrack {
        &self.ct
    }
    /// The connection table of IPv6 flows.
    pub fn conntrack6(&self) -> &ConnTrack<Tuple6> {
        &self.ct6
    }
    /// Packets and bytes matched by each rule, in the order of the rule set (filter table
    /// chains, then nat), since the rule set was loaded.
    pub fn rule_counters(&self) -> &[[u64; 2]] {
        &self.counters
    }
    /// Takes the log records kept so far.
    pub fn drain_log(&mut self) -> impl Iterator<Item = LogEvent> + '_ {
        self.log.drain(..)
    }

    fn refresh(&mut self) {
        let g = self.handle.inner.1.load(Ordering::Acquire);
        if g != self.generation {
            self.rules = self.handle.current();
            self.generation = g;
            self.reset_state();
            self.stats.reloads += 1;
        }
    }

    fn iface(&self, p: PortId) -> Option<&Iface> {
        self.ifaces.get(usize::from(p.0))?.as_ref()
    }

    fn drop(&mut self, r: DropReason) -> Verdict {
        self.drops.drop(r);
        Verdict::Drop(r)
    }

    /// Runs one IP packet through the firewall: conntrack, nat (prerouting or output),
    /// the routing decision by `router`, filter (input, forward or output), nat
    /// (postrouting or input). The packet is translated in place. IPv6 packets skip the
    /// nat table.
    pub fn process<B: PacketBuf>(
        &mut self,
        buf: &mut B,
        meta: &mut Meta,
        from: Source,
        router: &mut dyn FnMut(IpAddr) -> Route,
        now: Instant,
    ) -> Verdict {
        self.refresh();
        self.stats.packets += 1;
        let mut info = PktInfo::default();
        if let Err(r) = parse_ip_into(buf.data(), &mut info) {
            return self.drop(r);
        }
        if info.v6 {
            return self.process6(buf, meta, from, router, now, &info);
        }
        let tuple = tuple_of(&info);
        if self.filter_invariant
            && let Some(v) = self.replay(&info, &tuple, meta, from, router, now)
        {
            return v;
        }
        // Conntrack: a known flow, an ICMP error about one, a new flow, or invalid.
        let mut conn: Option<(u32, Direction)> = None;
        let mut related: Option<(u32, Direction, usize)> = None;
        let mut ct = CtStates::NEW;
        if let Some((ty, _)) = info.icmp
            && is_icmp_error(ty)
        {
            let inner = icmp_inner(buf.data(), &info);
            match inner.and_then(|(off, t)| self.ct.lookup(&t.reversed(), now).map(|c| (c, off))) {
                Some(((id, dir), off)) => {
                    related = Some((id, dir, off));
                    ct = CtStates::RELATED;
                }
                None => ct = CtStates::INVALID,
            }
        } else if let Some((id, dir)) = self.ct.lookup(&tuple, now) {
            let t = self.ct.timeouts;
            let len = info.total;
            let ok = self
                .ct
                .get_mut(id)
                .is_some_and(|c| c.update(dir, info.tcp_flags, len, &t, now));
            let replied = self.ct.get(id).is_some_and(|c| c.replied);
            ct = if !ok {
                self.ct.count_invalid();
                CtStates::INVALID
            } else if replied {
                CtStates::ESTABLISHED
            } else {
                CtStates::NEW
            };
            conn = Some((id, dir));
        } else if info.proto == headers::TCP && (info.tcp_flags & 0x17 != 0x02) {
            // Not a bare SYN and no flow: a stray segment.
            self.ct.count_invalid();
            ct = CtStates::INVALID;
        }
        let rules = self.rules.clone();
        let iif = match from {
            Source::Port(p) => self.iface(p).map(|i| Arc::clone(&i.name)),
            Source::Local => None,
        };
        let mut new_conn = (conn.is_none() && related.is_none() && ct == CtStates::NEW)
            .then(|| Conn::new(tuple, now));

        // Destination translation: prerouting, or output for local packets.
        let pre_hook = if from == Source::Local {
            Hook::Output
        } else {
            Hook::Prerouting
        };
        if let Some((id, dir)) = conn {
            if let Some(c) = self.ct.get(id) {
                let target = c.translated(dir);
                self.translate(buf, &mut info, false, target.dst, target.dport);
            }
        } else if let Some((id, dir, off)) = related {
            self.translate_related(buf, &info, id, dir, off, false);
            info.dst = headers::be32(buf.data(), 16).unwrap_or(info.dst);
        } else if let Some(c) = new_conn.as_mut() {
            let view = View {
                info: &info,
                data: buf.data(),
                ct,
                iif: iif.as_deref(),
                oif: None,
            };
            let outcome =
                self.run_hook(&rules, TableKind::Nat, pre_hook, &view, &mut meta.mark, now);
            if let Outcome::Nat(a) = outcome
                && let Some((addr, port)) = self.pick_dst(&a, &info, c)
            {
                c.reply.src = addr;
                c.reply.sport = port;
                self.translate(buf, &mut info, false, addr, port);
            }
        }

        let route = router(IpAddr::V4(Ipv4Addr::from(info.dst)));
        let oif_port = match route {
            Route::Out(p) => Some(p),
            _ => None,
        };
        let oif = oif_port
            .and_then(|p| self.iface(p))
            .map(|i| Arc::clone(&i.name));

        // Filter.
        let mark_in = meta.mark;
        let p = Filtered {
            from,
            route,
            info: &info,
            ct,
            iif: iif.as_deref(),
            oif: oif.as_deref(),
        };
        if let Err(v) = self.filter(&rules, p, buf, &mut meta.mark, now) {
            return v;
        }
        if self.filter_invariant
            && ct == CtStates::ESTABLISHED
            && let Some((id, dir)) = conn
        {
            let m = self.flow_memo(tuple, from, &info, (mark_in, meta.mark), (id, dir), route);
            self.memo.remember(&self.ct, m);
        }

        // Source translation: postrouting, or input for local delivery.
        let post_hook = if route == Route::Local {
            Hook::Input
        } else {
            Hook::Postrouting
        };
        if let Some((id, dir)) = conn {
            if let Some(c) = self.ct.get(id) {
                let target = c.translated(dir);
                self.translate(buf, &mut info, true, target.src, target.sport);
            }
        } else if let Some((id, dir, off)) = related {
            self.translate_related(buf, &info, id, dir, off, true);
        } else if let Some(mut c) = new_conn.take() {
            let view = View {
                info: &info,
                data: buf.data(),
                ct,
                iif: iif.as_deref(),
                oif: oif.as_deref(),
            };
            let outcome = self.run_hook(
                &rules,
                TableKind::Nat,
                post_hook,
                &view,
                &mut meta.mark,
                now,
            );
            if let Outcome::Nat(a) = outcome {
                match self.pick_src(&a, &info, &c, oif_port) {
                    Some((addr, port)) => {
                        c.reply.dst = addr;
                        c.reply.dport = port;
                        self.translate(buf, &mut info, true, addr, port);
                    }
                    None => return self.drop(DropReason::Unsupported),
                }
            }
            let t = self.ct.timeouts;
            c.update(Direction::Original, info.tcp_flags, info.total, &t, now);
            self.ct
                .set_capacity(self.cfg.conntrack_capacity.saturating_sub(self.ct6.len()));
            if self.ct.insert(c, now).is_err() {
                return self.drop(DropReason::ConnTableFull);
            }
        }
        self.stats.accepted += 1;
        Verdict::Accept(route)
    }

    /// The path an accepted packet took through the filter walk just recorded: `marks` is
    /// its mark before and after the walk, `conn` its flow and direction.
    fn flow_memo<K>(
        &self,
        tuple: K,
        from: Source,
        info: &PktInfo,
        marks: (u32, u32),
        conn: (u32, Direction),
        route: Route,
    ) -> FlowMemo<K> {
        FlowMemo {
            tuple,
            from,
            flags: info.tcp_flags,
            mark_in: marks.0,
            mark_out: marks.1,
            id: conn.0,
            dir: conn.1,
            route,
            trail: self.trail,
        }
    }

    /// The verdict for an IPv4 packet that follows a remembered path (see [`Memo::replay`]).
    fn replay(
        &mut self,
        info: &PktInfo,
        tuple: &Tuple,
        meta: &mut Meta,
        from: Source,
        router: &mut dyn FnMut(IpAddr) -> Route,
        now: Instant,
    ) -> Option<Verdict> {
        let route = self.memo.replay(
            &mut self.ct,
            &mut self.counters,
            info,
            tuple,
            &mut meta.mark,
            from,
            || router(IpAddr::V4(Ipv4Addr::from(info.dst))),
            now,
        )?;
        self.stats.accepted += 1;
        self.stats.fast_path += 1;
        Some(Verdict::Accept(route))
    }

    /// The IPv6 path: conntrack (its own table), the routing decision, filter. No nat.
    fn process6<B: PacketBuf>(
        &mut self,
        buf: &mut B,
        meta: &mut Meta,
        from: Source,
        router: &mut dyn FnMut(IpAddr) -> Route,
        now: Instant,
        info: &PktInfo,
    ) -> Verdict {
        let tuple = tuple6_of(info);
        if self.filter_invariant
            && let Some(route) = self.memo6.replay(
                &mut self.ct6,
                &mut self.counters,
                info,
                &tuple,
                &mut meta.mark,
                from,
                || router(IpAddr::V6(Ipv6Addr::from(info.dst6))),
                now,
            )
        {
            self.stats.accepted += 1;
            self.stats.fast_path += 1;
            return Verdict::Accept(route);
        }
        let mut known = false;
        let mut conn: Option<(u32, Direction)> = None;
        let mut ct = CtStates::NEW;
        if let Some((ty, _)) = info.icmp
            && is_icmp6_error(ty)
        {
            // An ICMPv6 error is related to the flow of the packet it quotes.
            let inner = icmp6_inner(buf.data(), info);
            ct = match inner.and_then(|t| self.ct6.lookup(&t.reversed(), now)) {
                Some(_) => CtStates::RELATED,
                None => CtStates::INVALID,
            };
            known = true;
        } else if let Some((id, dir)) = self.ct6.lookup(&tuple, now) {
            let t = self.ct6.timeouts;
            let ok = self
                .ct6
                .get_mut(id)
                .is_some_and(|c| c.update(dir, info.tcp_flags, info.total, &t, now));
            let replied = self.ct6.get(id).is_some_and(|c| c.replied);
            ct = if !ok {
                self.ct6.count_invalid();
                CtStates::INVALID
            } else if replied {
                CtStates::ESTABLISHED
            } else {
                CtStates::NEW
            };
            known = true;
            conn = Some((id, dir));
        } else if info.proto == headers::TCP && (info.tcp_flags & 0x17 != 0x02) {
            self.ct6.count_invalid();
            ct = CtStates::INVALID;
        }
        let new_conn = (!known && ct == CtStates::NEW).then(|| Conn::new(tuple, now));
        let route = router(IpAddr::V6(Ipv6Addr::from(info.dst6)));
        let iif = match from {
            Source::Port(p) => self.iface(p).map(|i| Arc::clone(&i.name)),
            Source::Local => None,
        };
        let oif = match route {
            Route::Out(p) => self.iface(p).map(|i| Arc::clone(&i.name)),
            _ => None,
        };
        let rules = self.rules.clone();
        let mark_in = meta.mark;
        let p = Filtered {
            from,
            route,
            info,
            ct,
            iif: iif.as_deref(),
            oif: oif.as_deref(),
        };
        if let Err(v) = self.filter(&rules, p, buf, &mut meta.mark, now) {
            return v;
        }
        if self.filter_invariant
            && ct == CtStates::ESTABLISHED
            && let Some((id, dir)) = conn
        {
            let m = self.flow_memo(tuple, from, info, (mark_in, meta.mark), (id, dir), route);
            self.memo6.remember(&self.ct6, m);
        }
        if let Some(mut c) = new_conn {
            let t = self.ct6.timeouts;
            c.update(Direction::Original, info.tcp_flags, info.total, &t, now);
            self.ct6
                .set_capacity(self.cfg.conntrack_capacity.saturating_sub(self.ct.len()));
            if self.ct6.insert(c, now).is_err() {
                return self.drop(DropReason::ConnTableFull);
            }
        }
        self.stats.accepted += 1;
        Verdict::Accept(route)
    }

    fn reject<B: PacketBuf>(&mut self, buf: &mut B, info: &PktInfo, with: RejectWith) -> Verdict {
        let mut out = [0u8; 1280];
        let Some(len) = build_reject(buf.data(), info, with, &mut out) else {
            return self.drop(DropReason::Filtered);
        };
        let cur = buf.len();
        if len > cur && buf.push_back(len - cur).is_err() {
            return self.drop(DropReason::NoRoom);
        }
        buf.truncate(len);
        buf.data_mut().copy_from_slice(&out[..len]);
        self.stats.rejected += 1;
        Verdict::Reject
    }

    /// Rewrites the destination (`src: false`) or source of the packet.
    fn translate<B: PacketBuf>(
        &mut self,
        buf: &mut B,
        info: &mut PktInfo,
        src: bool,
        addr: u32,
        port: u16,
    ) {
        let (cur_a, cur_p) = if src {
            (info.src, info.sport)
        } else {
            (info.dst, info.dport)
        };
        let port = if info.has_ports { Some(port) } else { None };
        if cur_a == addr && port.is_none_or(|p| p == cur_p) {
            return;
        }
        rewrite(buf.data_mut(), 0, info.l4, src, addr, port, None);
        if src {
            info.src = addr;
            info.sport = port.unwrap_or(info.sport);
        } else {
            info.dst = addr;
            info.dport = port.unwrap_or(info.dport);
        }
        self.stats.translated += 1;
    }

    /// Translates an ICMP error about flow `id`: the outer address that is the flow's, and
    /// the quoted packet (RFC 5508 §6 asks NATs to do both).
    fn translate_related<B: PacketBuf>(
        &mut self,
        buf: &mut B,
        info: &PktInfo,
        id: u32,
        dir: Direction,
        inner: usize,
        src_side: bool,
    ) {
        let Some(c) = self.ct.get(id).copied() else {
            return;
        };
        // The error travels `dir`; the quoted packet travelled the other way.
        let (seen, target) = match dir {
            Direction::Original => (c.original, c.translated(Direction::Original)),
            Direction::Reply => (c.reply, c.translated(Direction::Reply)),
        };
        let icmp_csum = info.l4.map(|l4| l4 + 2);
        let d = buf.data_mut();
        let inner_ihl = usize::from(d.get(inner).map_or(5, |b| b & 0x0f)) * 4;
        let inner_l4 = Some(inner + inner_ihl);
        if src_side {
            if info.src == seen.src {
                rewrite(d, 0, None, true, target.src, None, None);
            }
            // The quoted packet's destination is this side's source.
            rewrite(
                d,
                inner,
                inner_l4,
                false,
                target.src,
                Some(target.sport),
                icmp_csum,
            );
        } else {
            if info.dst == seen.dst {
                rewrite(d, 0, None, false, target.dst, None, None);
            }
            rewrite(
                d,
                inner,
                inner_l4,
                true,
                target.dst,
                Some(target.dport),
                icmp_csum,
            );
        }
        self.stats.translated += 1;
    }

    fn pick_dst(&self, a: &Action, info: &PktInfo, c: &Conn) -> Option<(u32, u16)> {
        match a {
            Action::Dnat(t) => self.pick(t, c, false),
            Action::Netmap { to } => {
                let host = info.dst & !(to.hi - to.lo);
                Some((to.lo | host, c.original.dport))
            }
            _ => None,
        }
    }

    fn pick_src(
        &self,
        a: &Action,
        info: &PktInfo,
        c: &Conn,
        oif: Option<PortId>,
    ) -> Option<(u32, u16)> {
        match a {
            Action::Snat(t) => self.pick(t, c, true),
            Action::Masquerade { ports } => {
                let addr = oif.and_then(|p| self.iface(p)).and_then(|i| i.addr)?;
                let t = NatTarget {
                    addrs: crate::ir::AddrRange::host(addr),
                    ports: *ports,
                };
                self.pick(&t, c, true)
            }
            Action::Netmap { to } => {
                let host = info.src & !(to.hi - to.lo);
                Some((to.lo | host, c.original.sport))
            }
            _ => None,
        }
    }

    /// Picks an address and port from `t` such that the flow's reply tuple is unique:
    /// the original port if free (and allowed), else the first free one from a hash of
    /// the flow.
    fn pick(&self, t: &NatTarget, c: &Conn, src: bool) -> Option<(u32, u16)> {
        let orig_port = if src {
            c.original.sport
        } else {
            c.original.dport
        };
        let span = u64::from(t.addrs.hi - t.addrs.lo) + 1;
        let h = u64::from(c.original.src ^ c.original.dst.rotate_left(7))
            ^ u64::from(c.original.sport) << 16
            ^ u64::from(c.original.dport);
        let addr = t.addrs.lo + (h % span) as u32;
        let has_ports = matches!(c.original.proto, 6 | 17 | 33 | 132 | 136);
        let free = |port: u16| {
            let mut reply = c.reply;
            if src {
                reply.dst = addr;
                reply.dport = port;
            } else {
                reply.src = addr;
                reply.sport = port;
            }
            !self.ct.tuple_in_use(&reply)
        };
        if !has_ports {
            return Some((addr, orig_port));
        }
        let range = t.ports.unwrap_or(crate::ir::PortRange {
            lo: 1024,
            hi: u16::MAX,
        });
        if (t.ports.is_none() || range.contains(orig_port)) && free(orig_port) {
            return Some((addr, orig_port));
        }
        let n = u32::from(range.hi - range.lo) + 1;
        let start = (h % u64::from(n)) as u32;
        // Bounded probing: a nearly full range gives up (and the packet is dropped) rather
        // than scanning 64K ports per packet.
        for i in 0..n.min(4096) {
            let p = range.lo + ((start + i) % n) as u16;
            if free(p) {
                return Some((addr, p));
            }
        }
        None
    }

    /// The filter table's walk for packet `p` (the output hook for a local packet, else
    /// input or forward by its route), recording the path it takes when the filter is
    /// invariant (see [`Trail`]): `Ok` when the packet goes on, else its verdict (no route,
    /// a drop, or a reject sent).
    fn filter<B: PacketBuf>(
        &mut self,
        rules: &Compiled,
        p: Filtered<'_>,
        buf: &mut B,
        mark: &mut u32,
        now: Instant,
    ) -> Result<(), Verdict> {
        let hook = match (p.from, p.route) {
            (Source::Local, _) => Hook::Output,
            (_, Route::Local) => Hook::Input,
            (_, Route::Out(_)) => Hook::Forward,
            (_, Route::Unreachable) => return Err(self.drop(DropReason::NoRoute)),
        };
        let view = View {
            info: p.info,
            data: buf.data(),
            ct: p.ct,
            iif: p.iif,
            oif: p.oif,
        };
        self.trail = Trail {
            on: self.filter_invariant,
            ..Trail::default()
        };
        let outcome = self.run_hook(rules, TableKind::Filter, hook, &view, mark, now);
        self.trail.on = false;
        match outcome {
            Outcome::Accept | Outcome::Policy(Policy::Accept) | Outcome::Nat(_) => Ok(()),
            Outcome::Drop => Err(self.drop(DropReason::Filtered)),
            Outcome::Policy(Policy::Drop) => Err(self.drop(DropReason::Policy)),
            Outcome::Reject(with) => Err(self.reject(buf, p.info, with)),
        }
    }

    fn run_hook(
        &mut self,
        rules: &Compiled,
        table: TableKind,
        hook: Hook,
        v: &View<'_>,
        mark: &mut u32,
        now: Instant,
    ) -> Outcome {
        let t = rules.table(table);
        let Some(base) = t.hooks[hook.index()] else {
            return Outcome::Policy(Policy::Accept);
        };
        let policy = t.chains[base].policy.unwrap_or_default();
        let mut stack: [(usize, Option<u32>); MAX_DEPTH] = [(0, None); MAX_DEPTH];
        let mut depth = 0;
        let (mut chain, mut after) = (base, None::<u32>);
        loop {
            let ch = &t.chains[chain];
            let hit = self.next_match(ch, v, *mark, after, now);
            let Some(i) = hit else {
                // End of chain: back to the caller, or the policy.
                if depth == 0 {
                    return Outcome::Policy(policy);
                }
                depth -= 1;
                (chain, after) = stack[depth];
                continue;
            };
            let rule = &ch.rules[i as usize];
            let c = &mut self.counters[rule.counter];
            c[0] += 1;
            c[1] += v.info.total as u64;
            self.trail.push(rule.counter);
            after = Some(i);
            match &rule.action {
                CAction::Jump(target) => {
                    if depth >= MAX_DEPTH {
                        return Outcome::Drop;
                    }
                    stack[depth] = (chain, Some(i));
                    depth += 1;
                    (chain, after) = (*target, None);
                }
                CAction::Goto(target) => (chain, after) = (*target, None),
                CAction::Plain(a) => match a {
                    Action::Accept => return Outcome::Accept,
                    Action::Drop => return Outcome::Drop,
                    Action::Reject(w) => return Outcome::Reject(*w),
                    Action::Return => {
                        if depth == 0 {
                            return Outcome::Policy(policy);
                        }
                        depth -= 1;
                        (chain, after) = stack[depth];
                    }
                    Action::Mark { value, mask } => *mark = (*mark & !mask) ^ value,
                    Action::Log { prefix } => {
                        self.log_event(prefix, table, &ch.name, rule.line, v, now)
                    }
                    Action::Counter => {}
                    a => return Outcome::Nat(a.clone()),
                },
            }
        }
    }

    /// The index of the next rule of `ch` after `after` that matches, stateful matches
    /// included.
    fn next_match(
        &mut self,
        ch: &CChain,
        v: &View<'_>,
        mark: u32,
        mut after: Option<u32>,
        now: Instant,
    ) -> Option<u32> {
        // The classifier keys on IPv4 5-tuples; IPv6 packets walk the rules in order.
        let cls = ch.classifier.as_ref().filter(|_| !v.info.v6);
        loop {
            let i = match cls {
                Some(cls) => {
                    let key = [
                        v.info.src,
                        v.info.dst,
                        u32::from(if v.info.has_ports { v.info.sport } else { 0 }),
                        u32::from(if v.info.has_ports { v.info.dport } else { 0 }),
                        u32::from(v.info.proto),
                    ];
                    cls.lookup_with(&key, after, |id| {
                        ch.rules
                            .get(id as usize)
                            .is_some_and(|r| stateless(r, v, mark))
                    })?
                }
                None => {
                    let start = after.map_or(0, |a| a as usize + 1);
                    let off = ch
                        .rules
                        .get(start..)?
                        .iter()
                        .position(|r| stateless(r, v, mark))?;
                    (start + off) as u32
                }
            };
            let rule = ch.rules.get(i as usize)?;
            if rule.stateful.is_empty() || self.stateful(rule, v, now) {
                return Some(i);
            }
            after = Some(i);
        }
    }

    fn stateful(&mut self, rule: &CRule, v: &View<'_>, now: Instant) -> bool {
        for m in &rule.stateful {
            let ok = match m {
                CMatch::Limit(i) => {
                    let Some(cfg) = self.rules.limits.get(*i).copied() else {
                        return false;
                    };
                    let b = self.limits[*i].get_or_insert_with(|| Bucket::full(&cfg, now));
                    b.take(&cfg, now)
                }
                CMatch::HashLimit(i, key) => {
                    let Some(cfg) = self.rules.hashlimits.get(*i).copied() else {
                        return false;
                    };
                    let mut k: u64 = 0;
                    if v.info.v6 {
                        // IPv6 addresses do not fit the key: hash the chosen fields
                        // (keyed SipHash, so that sources cannot be picked to collide).
                        let pick = |on: bool, a: u128| if on { a } else { 0 };
                        k = self.hash_state.hash_one((
                            pick(key.src_ip, v.info.src6),
                            pick(key.dst_ip, v.info.dst6),
                            if key.src_port { v.info.sport } else { 0 },
                            if key.dst_port { v.info.dport } else { 0 },
                        ));
                    } else if key.src_ip {
                        k ^= u64::from(v.info.src);
                    }
                    if key.dst_ip {
                        k ^= u64::from(v.info.dst).rotate_left(32);
                    }
                    if key.src_port {
                        k ^= u64::from(v.info.sport).rotate_left(16);
                    }
                    if key.dst_port {
                        k ^= u64::from(v.info.dport).rotate_left(48);
                    }
                    let table = &mut self.hashlimits[*i];
                    if table.len() >= self.cfg.hashlimit_keys && !table.contains_key(&k) {
                        // Forget keys whose bucket has refilled: they hold no state.
                        table.retain(|_, b| {
                            let mut probe = *b;
                            probe.take(&cfg, now);
                            probe.tokens + 1 < cfg.burst
                        });
                    }
                    let b = table.entry(k).or_insert_with(|| Bucket::full(&cfg, now));
                    b.take(&cfg, now)
                }
                _ => true,
            };
            if !ok {
                return false;
            }
        }
        true
    }

    fn log_event(
        &mut self,
        prefix: &str,
        table: TableKind,
        chain: &str,
        line: u32,
        v: &View<'_>,
        now: Instant,
    ) {
        let cfg = BucketCfg {
            ns_per_token: 1_000_000_000 / u64::from(self.cfg.log_per_second.max(1)),
            burst: self.cfg.log_per_second.max(1),
        };
        if !self.log_bucket.take(&cfg, now) || self.log.len() >= self.cfg.log_queue {
            self.stats.log_suppressed += 1;
            return;
        }
        self.stats.logged += 1;
        self.log.push_back(LogEvent {
            at: now,
            prefix: prefix.to_owned(),
            table,
            chain: chain.to_owned(),
            line,
            tuple: if v.info.v6 {
                FlowTuple::V6(tuple6_of(v.info))
            } else {
                FlowTuple::V4(tuple_of(v.info))
            },
            len: v.info.total as u16,
        });
    }
}

/// Whether the packet's source (`src`) or destination address is in `a`; an address of the
/// other family never is.
fn addr_in(a: &CAddr, i: &PktInfo, src: bool) -> bool {
    let (x, x6) = if src {
        (i.src, i.src6)
    } else {
        (i.dst, i.dst6)
    };
    match a {
        CAddr::Range(r) => !i.v6 && r.contains(x),
        CAddr::Range6(r) => i.v6 && r.contains(x6),
        CAddr::Set(s) => s.data.read().is_ok_and(|d| {
            if i.v6 {
                d.contains_addr6(x6)
            } else {
                d.contains_addr(x)
            }
        }),
    }
}

fn port_in(p: &CPorts, x: u16) -> bool {
    match p {
        CPorts::Ranges(r) => r.iter().any(|r| r.contains(x)),
        CPorts::Set(s) => s.data.read().is_ok_and(|d| d.contains_port(x)),
    }
}

/// Whether every stateless match of `r` holds.
fn stateless(r: &CRule, v: &View<'_>, mark: u32) -> bool {
    let i = v.info;
    // A rule with IPv4 addresses matches IPv4 packets only, one with IPv6 addresses IPv6
    // only, negated addresses included (`! -s 10.0.0.0/8` is still an IPv4 rule).
    if let Some(f) = r.family
        && (f == Family::Ipv6) != i.v6
    {
        return false;
    }
    let icmp4 = if i.v6 { None } else { i.icmp };
    let icmp6 = if i.v6 { i.icmp } else { None };
    r.matches.iter().all(|m| match m {
        CMatch::InIface(f, neg) => v.iif.is_some_and(|n| f.matches(n)) != *neg,
        CMatch::OutIface(f, neg) => v.oif.is_some_and(|n| f.matches(n)) != *neg,
        CMatch::Src(a, neg) => addr_in(a, i, true) != *neg,
        CMatch::Dst(a, neg) => addr_in(a, i, false) != *neg,
        CMatch::Proto(p, neg) => (i.proto == *p) != *neg,
        // Like iptables, a port match on a packet without ports fails even when negated.
        CMatch::SrcPort(p, neg) => i.has_ports && port_in(p, i.sport) != *neg,
        CMatch::DstPort(p, neg) => i.has_ports && port_in(p, i.dport) != *neg,
        CMatch::Icmp(ty, code, neg) => {
            icmp4.is_some_and(|(t, c)| t == *ty && code.is_none_or(|k| k == c)) != *neg
        }
        CMatch::Icmp6(ty, code, neg) => {
            icmp6.is_some_and(|(t, c)| t == *ty && code.is_none_or(|k| k == c)) != *neg
        }
        CMatch::TcpFlags(mask, set, neg) => {
            i.proto == headers::TCP && i.l4.is_some() && ((i.tcp_flags & mask) == *set) != *neg
        }
        CMatch::CtState(s, neg) => v.ct.intersects(*s) != *neg,
        CMatch::Mark(value, mask, neg) => ((mark & mask) == *value) != *neg,
        CMatch::Length(lo, hi, neg) => (*lo as usize <= i.total && i.total <= *hi as usize) != *neg,
        CMatch::Payload(pat, from, to, neg) => {
            let start = usize::from(*from);
            let end = (usize::from(*to) + pat.len()).min(i.total);
            let found = v
                .data
                .get(start..end)
                .is_some_and(|w| w.windows(pat.len()).any(|x| x == pat.as_slice()));
            found != *neg
        }
        CMatch::Set(s, dirs, neg) => {
            let pick_a = |d: Dir| if d == Dir::Src { i.src } else { i.dst };
            let pick_p = |d: Dir| if d == Dir::Src { i.sport } else { i.dport };
            let pick_a6 = |d: Dir| if d == Dir::Src { i.src6 } else { i.dst6 };
            let hit = s.data.read().is_ok_and(|data| match s.kind {
                crate::ir::SetKind::Addr if i.v6 => data.contains_addr6(pick_a6(dirs[0])),
                crate::ir::SetKind::Addr => data.contains_addr(pick_a(dirs[0])),
                crate::ir::SetKind::Port => i.has_ports && data.contains_port(pick_p(dirs[0])),
                crate::ir::SetKind::Service => {
                    !i.v6
                        && i.has_ports
                        && dirs.len() > 1
                        && data.contains_service(pick_a(dirs[0]), pick_p(dirs[1]))
                }
            });
            hit != *neg
        }
        CMatch::Limit(_) | CMatch::HashLimit(..) => true,
    })
}

/// A [`Stage`] running a [`Firewall`] with a router: accepted packets are forwarded to the
/// port the router picks ([`StageAction::Forward`]) or delivered locally, rejected ones
/// leave with their answer through the port they came in on.
pub struct FirewallStage<R> {
    /// The engine.
    pub firewall: Firewall,
    /// The routing decision for a destination.
    pub router: R,
}

impl<R> core::fmt::Debug for FirewallStage<R> {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("FirewallStage")
            .field("firewall", &self.firewall)
            .finish()
    }
}

impl<B: PacketBuf, R: FnMut(IpAddr) -> Route> Stage<B> for FirewallStage<R> {
    fn process(&mut self, buf: &mut B, meta: &mut Meta, now: Instant) -> StageAction {
        let from = Source::Port(meta.ingress);
        match self
            .firewall
            .process(buf, meta, from, &mut self.router, now)
        {
            Verdict::Accept(Route::Out(p)) => StageAction::Forward(p),
            Verdict::Accept(Route::Local) => StageAction::Local,
            Verdict::Accept(Route::Unreachable) => StageAction::Drop(DropReason::NoRoute),
            Verdict::Drop(r) => StageAction::Drop(r),
            Verdict::Reject => {
                meta.clear_offsets();
                StageAction::Forward(meta.ingress)
            }
        }
    }

    fn poll_timeout(&self) -> Option<Instant> {
        None
    }

    fn handle_timeout(&mut self, now: Instant) {
        self.firewall.handle_timeout(now);
    }
}

impl Firewall {
    /// Removes expired flows, a bounded number per call ([`Config::sweep_budget`]); call it
    /// every second or so.
    pub fn handle_timeout(&mut self, now: Instant) {
        let budget = self.cfg.sweep_budget;
        self.ct.sweep(now, budget);
        self.ct6.sweep(now, budget);
    }
}
