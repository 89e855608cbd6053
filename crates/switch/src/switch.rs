//! The switch fabric: bridge domains, ports, learning, forwarding, flooding, aging.

use crate::arp::{self, Arp, ETHERTYPE_ARP};
use crate::port::{HorizonGroup, MAX_VLAN, PortConfig, PortStats, VlanMode};
use crate::table::{
    EntryKind, FastMap, LEARNED, Lines, MacEntry, MacTable, hash, key, key_domain, key_mac,
};
use crate::{ConfigError, MacAddr, TPID_8021Q};
use core::net::Ipv4Addr;
use core::time::Duration;
use gatekit_packet::{DropCounters, DropReason, Instant, PortId};
use std::collections::VecDeque;

const NO_DOMAIN: u16 = u16::MAX;
/// [`PortFast::untagged_base`] of a port whose untagged frames have no domain (no domain's
/// base is 0: its low 16 bits would be the complement of [`NO_DOMAIN`]).
const NO_BASE: u64 = 0;
/// The group (I/G) bit of a MAC address in a table key (the low bit of its first byte).
const MULTICAST: u64 = 1 << 16;
/// An EtherType as a classification reads it: its two bytes as a little-endian number.
const fn wire(ethertype: u16) -> u16 {
    ethertype.swap_bytes()
}
/// Set in [`Class::expect`] for an ARP frame: no meta word has bit 8 set, so the fast path
/// finds no source it may decide for and leaves the frame to the full path (and suppression).
const ARP_MARK: u32 = 1 << 8;
const EVENT_QUEUE: usize = 256;

/// A bridge domain: one broadcast domain, one VLAN on trunk ports.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DomainConfig {
    /// The VLAN that maps to this domain (1..=4094).
    pub vlan: u16,
    /// Most MACs the domain may learn (MAC-flood protection).
    pub max_macs: Option<u32>,
    /// How long a learned MAC lives without being seen as a source (300 s by default, as in
    /// IEEE 802.1D). Aging runs in sweeps every quarter of this, so an entry goes between
    /// `aging` and `1.25 × aging` after it was last seen.
    pub aging: Duration,
    /// Answer ARP requests for addresses whose binding the domain learned, instead of
    /// flooding them to every site.
    pub arp_suppression: bool,
}

impl DomainConfig {
    /// A domain for `vlan` with 300 s aging, no limit, no ARP suppression.
    pub fn new(vlan: u16) -> Self {
        DomainConfig {
            vlan,
            max_macs: None,
            aging: Duration::from_secs(300),
            arp_suppression: false,
        }
    }
}

/// Counters of one bridge domain.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct DomainStats {
    /// MACs learned in the domain right now.
    pub learned: u32,
    /// Frames dropped because the domain's MAC limit was reached.
    pub mac_limit_drops: u64,
    /// Source addresses that moved between ports.
    pub mac_moves: u64,
    /// Frames from a static MAC arriving on another port than its own (not learned).
    pub static_conflicts: u64,
    /// Entries removed by aging.
    pub aged_out: u64,
    /// ARP requests answered by the fabric.
    pub arp_suppressed: u64,
    /// Frames flooded (broadcast, multicast, unknown unicast).
    pub flooded: u64,
}

/// Something the fabric noticed, for logs and alarms.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SwitchEvent {
    /// A learned address moved from one port to another (a host moved, or a loop).
    MacMove {
        /// VLAN of the domain.
        vlan: u16,
        /// The address.
        mac: MacAddr,
        /// Where it was.
        from: PortId,
        /// Where it is now.
        to: PortId,
    },
    /// A port or domain reached its MAC limit and dropped a frame from a new address.
    MacLimit {
        /// VLAN of the domain.
        vlan: u16,
        /// The port.
        port: PortId,
        /// The address not learned.
        mac: MacAddr,
    },
}

/// One egress port of a forwarding decision and how the frame leaves it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct EgressPort {
    /// The port.
    pub port: PortId,
    /// The 802.1Q tag the frame carries there (`None`: untagged); see [`retag`](crate::retag).
    pub tag: Option<u16>,
}

/// The egress ports of a forwarding decision: a caller-owned list, cleared and refilled by
/// each [`Switch::forward`], so the steady state allocates nothing.
///
/// The one port of a known unicast or an ARP reply is kept inline, the ports of a flood in a
/// list: deciding a unicast frame writes one port, not a list.
#[derive(Clone)]
pub struct Egress {
    /// The decision's port when it has exactly one; otherwise its ports are `many`.
    one: Option<EgressPort>,
    vlan: u16,
    many: Vec<EgressPort>,
}

impl Default for Egress {
    fn default() -> Self {
        Self::with_capacity(0)
    }
}

impl core::fmt::Debug for Egress {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Egress")
            .field("ports", &self.ports())
            .field("vlan", &self.vlan)
            .finish()
    }
}

impl Egress {
    /// An empty list with room for `n` ports (flooding fills up to one per port).
    pub fn with_capacity(n: usize) -> Self {
        Egress {
            one: None,
            vlan: 0,
            many: Vec::with_capacity(n),
        }
    }
    /// The ports, in port order for floods.
    #[inline]
    pub fn ports(&self) -> &[EgressPort] {
        match &self.one {
            Some(p) => core::slice::from_ref(p),
            None => &self.many,
        }
    }
    /// The VLAN the frame was classified into.
    pub fn vlan(&self) -> u16 {
        self.vlan
    }
    /// Whether no port was selected.
    pub fn is_empty(&self) -> bool {
        self.one.is_none() && self.many.is_empty()
    }
    /// Number of ports selected.
    pub fn len(&self) -> usize {
        if self.one.is_some() {
            1
        } else {
            self.many.len()
        }
    }
    /// Empties the list for a decision in `vlan`.
    #[inline]
    fn reset(&mut self, vlan: u16) {
        self.one = None;
        self.many.clear();
        self.vlan = vlan;
    }
    /// Makes `port` the decision's only port (after [`reset`](Self::reset) or not).
    #[inline]
    fn set_one(&mut self, vlan: u16, port: EgressPort) {
        self.one = Some(port);
        self.vlan = vlan;
    }
    /// Adds a port of a flood (after [`reset`](Self::reset)).
    #[inline]
    fn push(&mut self, port: EgressPort) {
        self.many.push(port);
    }
}

/// What the fabric decided for a frame.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Verdict {
    /// Known unicast: the egress list holds its one port.
    Forward,
    /// Broadcast, multicast or unknown unicast: the egress list holds every port of the
    /// domain except the ingress port and its split-horizon group (it may be empty).
    Flood,
    /// ARP suppression: the frame was rewritten into the ARP reply; the egress list holds the
    /// ingress port.
    Reply,
    /// Dropped for this reason (and counted on the ingress port).
    Drop(DropReason),
}

/// A port: what the data path reads of its configuration and the counters it bumps for
/// every frame share the first cache line; the rest of the configuration (the VLAN bitmap of a
/// trunk is 512 bytes) lives behind a pointer, read only for tagged frames and learning.
#[derive(Debug)]
#[repr(C, align(64))]
struct PortState {
    fast: PortFast,
    stats: PortStats,
    cfg: Box<PortConfig>,
}

impl PortState {
    /// Whether a payload of `len` bytes is over the port's MTU (the configuration is read
    /// only for a payload over [`PortFast::mtu32`], when the MTU is that large).
    #[inline]
    fn too_big(&self, len: usize) -> bool {
        len > self.fast.mtu32 as usize && len > self.cfg.mtu
    }
}

/// The per-frame part of a port's configuration.
#[derive(Debug, Clone, Copy)]
#[repr(C)]
struct PortFast {
    /// The key base (see [`base_of`]) of the bridge domain of untagged and priority-tagged
    /// frames ([`NO_BASE`] when the port has no such VLAN, or the VLAN no domain): an untagged
    /// frame is classified without the VLAN map.
    untagged_base: u64,
    /// The classification of an untagged frame, but for its domain, ready to be copied: its
    /// VLAN (an access port's, a trunk's native; 0 when none) and the port's split word (see
    /// [`Class::split`]).
    untagged_class: Class,
    /// The MTU as the fast path compares it with [`Pre::len32`]: at most `u32::MAX - 1`, so
    /// that a payload within it is within `mtu` too.
    mtu32: u32,
    trunk: bool,
}

impl PortFast {
    fn new(id: PortId, cfg: &PortConfig) -> Self {
        let (untagged, trunk) = match cfg.vlan {
            VlanMode::Access(v) => (Some(v), false),
            VlanMode::Trunk { native, .. } => (native, true),
        };
        PortFast {
            mtu32: u32::try_from(cfg.mtu).unwrap_or(u32::MAX).min(u32::MAX - 1),
            untagged_base: NO_BASE,
            untagged_class: Class {
                expect: u32::from(id.0) << 16,
                split: split_of(id, cfg.horizon),
                vlan: untagged.unwrap_or(0),
                payload: 14,
                drop: None,
            },
            trunk,
        }
    }

    /// The VLAN of untagged frames, if any.
    fn untagged(&self) -> Option<u16> {
        Some(self.untagged_class.vlan).filter(|&v| v != 0)
    }

    /// The port's split-horizon group.
    #[inline]
    fn horizon(&self) -> Option<HorizonGroup> {
        horizon_of(self.untagged_class.split)
    }

    /// [`PortConfig::egress_tag`] (a frame's VLAN is never 0).
    #[inline]
    fn egress_tag(&self, vlan: u16) -> Option<u16> {
        (self.trunk && self.untagged_class.vlan != vlan).then_some(vlan)
    }
}

#[derive(Debug)]
struct Domain {
    cfg: DomainConfig,
    /// Ports carrying the domain's VLAN, in port order.
    members: Vec<PortId>,
    stats: DomainStats,
}

#[derive(Debug, Clone, Copy)]
struct Binding {
    mac: MacAddr,
    last_seen_secs: u32,
    is_static: bool,
}

/// The layer-2 switching fabric: a sans-IO learning bridge with many bridge domains.
///
/// The gateway receives a frame on a port (TAP, GRE/TEB or VXLAN tunnel after decap, overlay
/// link), calls [`forward`](Self::forward), and sends the frame to each port of the returned
/// [`Egress`] (re-tagged with [`retag`](crate::retag) as each port wants; copies for floods).
/// Time is passed in; aging runs from [`handle_timeout`](Self::handle_timeout).
#[derive(Debug)]
pub struct Switch {
    ports: Vec<Option<PortState>>,
    domains: Vec<Domain>,
    vlan_domain: Box<VlanMap>,
    table: MacTable,
    bindings: FastMap<(u16, Ipv4Addr), Binding>,
    events: VecDeque<SwitchEvent>,
    events_lost: u64,
    next_sweep: Instant,
    drops: DropCounters,
    /// [`forward_batch`](Self::forward_batch)'s classifications, while it is not running.
    batch: Option<Scratch>,
}

impl Default for Switch {
    fn default() -> Self {
        Self::new()
    }
}

impl Switch {
    /// A fabric with no domains and no ports.
    pub fn new() -> Self {
        Switch {
            ports: Vec::new(),
            domains: Vec::new(),
            vlan_domain: Box::new([NO_DOMAIN; 4096]),
            table: MacTable::default(),
            bindings: FastMap::default(),
            events: VecDeque::with_capacity(EVENT_QUEUE),
            events_lost: 0,
            next_sweep: Instant::MAX,
            drops: DropCounters::default(),
            batch: Some(Scratch::default()),
        }
    }

    /// Reserves room for `n` MAC entries (so that learning them does not rehash).
    pub fn reserve(&mut self, n: usize) {
        self.table.reserve(n);
    }

    /// Adds a bridge domain.
    pub fn add_domain(&mut self, cfg: DomainConfig) -> Result<(), ConfigError> {
        if cfg.vlan == 0 || cfg.vlan > MAX_VLAN {
            return Err(ConfigError::Vlan { vlan: cfg.vlan });
        }
        if cfg.aging.is_zero() {
            return Err(ConfigError::Aging);
        }
        if self.vlan_domain[usize::from(cfg.vlan)] != NO_DOMAIN {
            return Err(ConfigError::DuplicateDomain { vlan: cfg.vlan });
        }
        let idx = self.domains.len() as u16;
        self.vlan_domain[usize::from(cfg.vlan)] = idx;
        for p in self.ports.iter_mut().flatten() {
            if p.fast.untagged() == Some(cfg.vlan) {
                p.fast.untagged_base = base_of(idx);
            }
        }
        let members = self
            .ports
            .iter()
            .enumerate()
            .filter(|(_, p)| p.as_ref().is_some_and(|p| p.cfg.carries(cfg.vlan)))
            .map(|(i, _)| PortId(i as u16))
            .collect();
        self.domains.push(Domain {
            cfg,
            members,
            stats: DomainStats::default(),
        });
        Ok(())
    }

    /// Adds (or replaces) port `id`. Replacing forgets the MACs learned on it.
    pub fn set_port(&mut self, id: PortId, cfg: PortConfig) -> Result<(), ConfigError> {
        let bad_vlan = |v: u16| v == 0 || v > MAX_VLAN;
        match &cfg.vlan {
            VlanMode::Access(v) if bad_vlan(*v) => return Err(ConfigError::Vlan { vlan: *v }),
            VlanMode::Trunk {
                native: Some(v), ..
            } if bad_vlan(*v) => return Err(ConfigError::Vlan { vlan: *v }),
            _ => {}
        }
        if cfg.mtu < 46 {
            return Err(ConfigError::Mtu { mtu: cfg.mtu });
        }
        self.remove_port(id);
        let i = usize::from(id.0);
        if self.ports.len() <= i {
            self.ports.resize_with(i + 1, || None);
        }
        for d in &mut self.domains {
            if cfg.carries(d.cfg.vlan) {
                let at = d.members.partition_point(|p| *p < id);
                d.members.insert(at, id);
            }
        }
        let mut fast = PortFast::new(id, &cfg);
        if let Some(d) = fast.untagged().and_then(|v| self.domain_index(v)) {
            fast.untagged_base = base_of(d);
        }
        self.ports[i] = Some(PortState {
            fast,
            stats: PortStats::default(),
            cfg: Box::new(cfg),
        });
        Ok(())
    }

    /// Removes port `id` and the MACs learned on it; static entries pointing at it stay.
    pub fn remove_port(&mut self, id: PortId) {
        let Some(slot) = self.ports.get_mut(usize::from(id.0)) else {
            return;
        };
        if slot.take().is_none() {
            return;
        }
        for d in &mut self.domains {
            d.members.retain(|p| *p != id);
        }
        let domains = &mut self.domains;
        self.table.retain(|k, e| {
            let gone = e.port == id && e.kind == EntryKind::Learned;
            if gone && let Some(d) = domains.get_mut(usize::from(key_domain(k))) {
                d.stats.learned = d.stats.learned.saturating_sub(1);
            }
            !gone
        });
    }

    /// A port's configuration.
    pub fn port(&self, id: PortId) -> Option<&PortConfig> {
        self.port_state(id).map(|p| &*p.cfg)
    }

    fn port_state(&self, id: PortId) -> Option<&PortState> {
        self.ports.get(usize::from(id.0)).and_then(Option::as_ref)
    }

    /// A port's counters.
    pub fn port_stats(&self, id: PortId) -> Option<&PortStats> {
        self.port_state(id).map(|p| &p.stats)
    }

    /// A domain's counters.
    pub fn domain_stats(&self, vlan: u16) -> Option<&DomainStats> {
        self.domain_index(vlan)
            .and_then(|d| self.domains.get(usize::from(d)))
            .map(|d| &d.stats)
    }

    /// Frames dropped before a port could be charged (unknown ingress port), by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    fn domain_index(&self, vlan: u16) -> Option<u16> {
        Some(domain_of(&self.vlan_domain, vlan)).filter(|&d| d != NO_DOMAIN)
    }

    /// Adds a static MAC entry: never aged, never moved by learning.
    pub fn add_static(&mut self, vlan: u16, mac: MacAddr, port: PortId) -> Result<(), ConfigError> {
        let d = self
            .domain_index(vlan)
            .ok_or(ConfigError::NoDomain { vlan })?;
        if self.port_state(port).is_none() {
            return Err(ConfigError::NoPort { port });
        }
        let old = self.table.insert(
            key(d, mac),
            MacEntry {
                port,
                kind: EntryKind::Static,
                last_seen_secs: 0,
            },
        );
        if let Some(old) = old
            && old.kind == EntryKind::Learned
        {
            self.unlearn(d, old.port);
        }
        Ok(())
    }

    /// Adds a static IPv4/MAC binding for ARP suppression.
    pub fn add_binding(
        &mut self,
        vlan: u16,
        ip: Ipv4Addr,
        mac: MacAddr,
    ) -> Result<(), ConfigError> {
        let d = self
            .domain_index(vlan)
            .ok_or(ConfigError::NoDomain { vlan })?;
        self.bindings.insert(
            (d, ip),
            Binding {
                mac,
                last_seen_secs: 0,
                is_static: true,
            },
        );
        Ok(())
    }

    /// The MAC bound to `ip` in `vlan`'s domain, if known.
    pub fn binding(&self, vlan: u16, ip: Ipv4Addr) -> Option<MacAddr> {
        let d = self.domain_index(vlan)?;
        self.bindings.get(&(d, ip)).map(|b| b.mac)
    }

    /// The entry for `mac` in `vlan`'s domain.
    pub fn lookup(&self, vlan: u16, mac: MacAddr) -> Option<MacEntry> {
        let d = self.domain_index(vlan)?;
        self.table.get(key(d, mac))
    }

    /// Entries in the MAC table, static ones included.
    pub fn mac_count(&self) -> usize {
        self.table.len()
    }

    /// Every entry of the MAC table as (VLAN of its domain, MAC, entry), in no particular
    /// order: for status displays (`gatekitctl macs`), not for the data path.
    pub fn entries(&self) -> impl Iterator<Item = (u16, MacAddr, MacEntry)> + '_ {
        self.table.iter().filter_map(|(k, e)| {
            let d = usize::from(key_domain(k));
            let vlan = self.domains.get(d)?.cfg.vlan;
            Some((vlan, key_mac(k), e))
        })
    }

    /// The next event, if any (at most 256 are kept; see [`events_lost`](Self::events_lost)).
    pub fn poll_event(&mut self) -> Option<SwitchEvent> {
        self.events.pop_front()
    }

    /// Events dropped because nobody polled them.
    pub fn events_lost(&self) -> u64 {
        self.events_lost
    }

    fn event(&mut self, e: SwitchEvent) {
        if self.events.len() >= EVENT_QUEUE {
            self.events_lost += 1;
        } else {
            self.events.push_back(e);
        }
    }

    fn unlearn(&mut self, d: u16, port: PortId) {
        if let Some(dom) = self.domains.get_mut(usize::from(d)) {
            dom.stats.learned = dom.stats.learned.saturating_sub(1);
        }
        if let Some(Some(p)) = self.ports.get_mut(usize::from(port.0)) {
            p.stats.learned = p.stats.learned.saturating_sub(1);
        }
    }

    fn drop_on(&mut self, port: PortId, r: DropReason) -> Verdict {
        match self.ports.get_mut(usize::from(port.0)) {
            Some(Some(p)) => p.stats.drops.add(r, 1),
            _ => self.drops.add(r, 1),
        }
        Verdict::Drop(r)
    }

    /// Learns the frame's source, and decides where the frame in `frame`, received on
    /// `ingress` at `now`, goes; fills `out` with the egress ports.
    ///
    /// Never panics and never allocates once `out` and the table have grown: a frame that
    /// cannot be switched is a [`Verdict::Drop`] counted on the ingress port.
    #[inline]
    pub fn forward(
        &mut self,
        ingress: PortId,
        frame: &mut [u8],
        now: Instant,
        out: &mut Egress,
    ) -> Verdict {
        let mut p = Pre::NONE;
        let secs = secs_of(now);
        match self.classify(ingress, frame, &mut p) {
            Ok(()) => match self.forward_known(ingress, &p, secs, out) {
                Some(v) => v,
                None => self.decide_full(ingress, frame, Ok(p), secs, out),
            },
            Err(r) => self.decide_full(ingress, frame, Err(r), secs, out),
        }
    }

    /// [`forward`](Self::forward) for many frames received at `now`: frame `i` of `frames`
    /// (its ingress port and bytes) gets its verdict in `verdicts[i]` and its egress ports in
    /// `out[i]`. Processes as many frames as all three slices have room for and returns that
    /// number.
    ///
    /// The verdicts, egress lists, counters, events and table afterwards are exactly those of
    /// calling `forward` on each frame in order. It is faster with a large MAC table: a frame's
    /// header is read and its two table lines are asked for (a prefetch, which waits for
    /// nothing) [`AHEAD`](Self::AHEAD) frames before it is decided, so that the lines of the
    /// frames ahead load while the frames behind are decided, and a decision finds its lines
    /// in the cache.
    pub fn forward_batch<F: AsMut<[u8]>>(
        &mut self,
        frames: &mut [(PortId, F)],
        now: Instant,
        out: &mut [Egress],
        verdicts: &mut [Verdict],
    ) -> usize {
        let n = frames.len().min(out.len()).min(verdicts.len());
        let secs = secs_of(now);
        let (Some(frames), Some(out), Some(verdicts)) =
            (frames.get_mut(..n), out.get_mut(..n), verdicts.get_mut(..n))
        else {
            return 0;
        };
        // The classifications of the frames in flight, a chunk of `AHEAD` frames at a time:
        // frame `j` of the chunk is decided from slot `j`, then frame `j` of the next chunk
        // (`AHEAD` frames later) is classified into it and its table lines are asked for.
        // The classification reads only the configuration, which deciding does not change,
        // so classifying ahead gives what classifying in turn would.
        let mut pres = self.batch.take().unwrap_or_default();
        let ring = &mut *pres.0;
        if let Some(first) = frames.get_mut(..n.min(Self::AHEAD)) {
            classify_run(
                &mut self.ports,
                &self.vlan_domain,
                self.table.lines(),
                first,
                ring,
            );
        }
        // Runs of frames on the fast path, which keeps what it reads at hand, and between
        // them a frame on the full path.
        let mut j = 0;
        while j < n {
            let run = self.fast(secs).forward_run(ring, j, frames, out);
            if let Some(vs) = verdicts.get_mut(j..j + run) {
                vs.fill(Verdict::Forward);
            }
            j += run;
            let (Some(p), Some(o), Some(v), Some((ingress, f))) = (
                ring.get_mut(j % Self::AHEAD),
                out.get_mut(j),
                verdicts.get_mut(j),
                frames.get_mut(j),
            ) else {
                break;
            };
            let pre = p.class.drop.map_or(Ok(*p), Err);
            *v = self.decide_full(*ingress, f.as_mut(), pre, secs, o);
            if let Some((ingress, f)) = frames.get_mut(j + Self::AHEAD) {
                let lines = self.table.lines();
                classify_into(
                    &mut self.ports,
                    &self.vlan_domain,
                    lines,
                    *ingress,
                    f.as_mut(),
                    p,
                );
            }
            j += 1;
        }
        self.batch = Some(pres);
        n
    }

    /// How many frames ahead of its decision [`forward_batch`](Self::forward_batch) reads a
    /// frame's header and asks for its table lines.
    pub const AHEAD: usize = 16;

    /// [`classify`] on this fabric.
    #[inline]
    fn classify(&mut self, ingress: PortId, frame: &[u8], pre: &mut Pre) -> Result<(), DropReason> {
        classify(&mut self.ports, &self.vlan_domain, ingress, frame, pre)
    }

    /// What the fast path reads and counts in, for frames received in second `secs`.
    #[inline(always)]
    fn fast(&mut self, secs: u32) -> Fast<'_> {
        Fast {
            lines: self.table.lines(),
            ports: &mut self.ports,
            vlan_domain: &self.vlan_domain,
            seen: (u64::from(secs) << 32) | LEARNED,
        }
    }

    /// [`Fast::forward`] on this fabric.
    #[inline(always)]
    fn forward_known(
        &mut self,
        ingress: PortId,
        p: &Pre,
        secs: u32,
        out: &mut Egress,
    ) -> Option<Verdict> {
        debug_assert_eq!(p.class.expect >> 16, u32::from(ingress.0));
        // The classification was written just now, a word at a time: the key words are read
        // alone (a pair read as one would wait for both writes to reach the cache).
        let want = ([p.src_want[0]; 2], [p.dst_want[0]; 2]);
        self.fast(secs)
            .forward(p, (&want.0, &want.1), out)
            .then_some(Verdict::Forward)
    }

    /// Learns the frame's source and decides where it goes, whatever the case. Out of line:
    /// the fast path around it keeps its registers.
    #[inline(never)]
    fn decide_full(
        &mut self,
        ingress: PortId,
        frame: &mut [u8],
        pre: Result<Pre, DropReason>,
        secs: u32,
        out: &mut Egress,
    ) -> Verdict {
        out.reset(0);
        let p = match pre {
            Ok(p) => p,
            Err(r) => return self.drop_on(ingress, r),
        };
        let ingress_horizon = horizon_of(p.class.split);
        let (vlan, d, payload) = (p.class.vlan, p.domain(), usize::from(p.class.payload));
        let (src_key, dst_key) = (!p.src_want[0], !p.dst_want[0]);
        out.vlan = vlan;

        if let Some(v) = self.learn(d, vlan, ingress, src_key, p.src_hash, secs) {
            return v;
        }

        let Some(dom) = self.domains.get(usize::from(d)) else {
            return self.drop_on(ingress, DropReason::VlanMismatch);
        };
        if dom.cfg.arp_suppression
            && p.class.expect & ARP_MARK != 0
            && let Some(v) = self.arp(d, ingress, frame, p, secs, out)
        {
            return v;
        }

        if dst_key & MULTICAST == 0
            && let Some(to) = self.table.port_h(dst_key, p.dst_hash)
        {
            let payload = frame.len().saturating_sub(payload);
            let Some(Some(p)) = self.ports.get_mut(usize::from(to.0)) else {
                return self.drop_on(ingress, DropReason::NoRoute);
            };
            if to == ingress || (ingress_horizon.is_some() && p.fast.horizon() == ingress_horizon) {
                return self.drop_on(ingress, DropReason::SplitHorizon);
            }
            if p.too_big(payload) {
                p.stats.drops.add(DropReason::TooBig, 1);
                return Verdict::Drop(DropReason::TooBig);
            }
            p.stats.tx_unicast += 1;
            out.set_one(
                vlan,
                EgressPort {
                    port: to,
                    tag: p.fast.egress_tag(vlan),
                },
            );
            return Verdict::Forward;
        }

        // Flood: broadcast, multicast, unknown unicast.
        let payload = frame.len().saturating_sub(payload);
        let Some(dom) = self.domains.get_mut(usize::from(d)) else {
            return Verdict::Flood;
        };
        dom.stats.flooded += 1;
        for &m in &dom.members {
            if m == ingress {
                continue;
            }
            let Some(Some(p)) = self.ports.get_mut(usize::from(m.0)) else {
                continue;
            };
            if ingress_horizon.is_some() && p.fast.horizon() == ingress_horizon {
                continue;
            }
            if p.too_big(payload) {
                p.stats.drops.add(DropReason::TooBig, 1);
                continue;
            }
            p.stats.tx_flooded += 1;
            out.push(EgressPort {
                port: m,
                tag: p.fast.egress_tag(vlan),
            });
        }
        Verdict::Flood
    }

    /// Learns the source of key `k` behind `ingress` in domain `d`; returns a verdict when
    /// the frame must be dropped (MAC limit).
    #[inline]
    fn learn(
        &mut self,
        d: u16,
        vlan: u16,
        ingress: PortId,
        k: u64,
        h: u64,
        secs: u32,
    ) -> Option<Verdict> {
        if let Some(mut e) = self.table.get_mut_h(k, h) {
            if e.port() == ingress {
                e.touch_secs(secs);
                return None;
            }
            if e.is_static() {
                if let Some(dom) = self.domains.get_mut(usize::from(d)) {
                    dom.stats.static_conflicts += 1;
                }
                return None;
            }
            // A move: the address now lives behind the ingress port.
            let from = e.port();
            e.set_port(ingress);
            e.touch_secs(secs);
            if let Some(Some(p)) = self.ports.get_mut(usize::from(from.0)) {
                p.stats.learned = p.stats.learned.saturating_sub(1);
            }
            if let Some(Some(p)) = self.ports.get_mut(usize::from(ingress.0)) {
                p.stats.learned += 1;
                p.stats.mac_moves += 1;
            }
            if let Some(dom) = self.domains.get_mut(usize::from(d)) {
                dom.stats.mac_moves += 1;
            }
            self.event(SwitchEvent::MacMove {
                vlan,
                mac: key_mac(k),
                from,
                to: ingress,
            });
            return None;
        }
        let (Some(Some(p)), Some(dom)) = (
            self.ports.get_mut(usize::from(ingress.0)),
            self.domains.get_mut(usize::from(d)),
        ) else {
            return None;
        };
        let port_full = p.cfg.max_macs.is_some_and(|m| p.stats.learned >= m);
        let dom_full = dom.cfg.max_macs.is_some_and(|m| dom.stats.learned >= m);
        if port_full || dom_full {
            dom.stats.mac_limit_drops += 1;
            p.stats.drops.add(DropReason::MacLimit, 1);
            self.event(SwitchEvent::MacLimit {
                vlan,
                port: ingress,
                mac: key_mac(k),
            });
            return Some(Verdict::Drop(DropReason::MacLimit));
        }
        p.stats.learned += 1;
        dom.stats.learned += 1;
        if self.next_sweep == Instant::MAX {
            self.next_sweep = Instant::from_secs(u64::from(secs)) + sweep_interval(dom.cfg.aging);
        }
        self.table.insert_new_h(
            k,
            h,
            MacEntry {
                port: ingress,
                kind: EntryKind::Learned,
                last_seen_secs: secs,
            },
        );
        None
    }

    /// ARP: learns the sender's binding and answers a request whose target is bound.
    fn arp(
        &mut self,
        d: u16,
        ingress: PortId,
        frame: &mut [u8],
        p: Pre,
        secs: u32,
        out: &mut Egress,
    ) -> Option<Verdict> {
        let payload = usize::from(p.class.payload);
        let a = Arp::parse(frame.get(payload..)?)?;
        if a.sha != key_mac(!p.src_want[0]) {
            return None;
        }
        if !a.spa.is_unspecified() {
            let b = self.bindings.entry((d, a.spa)).or_insert(Binding {
                mac: a.sha,
                last_seen_secs: secs,
                is_static: false,
            });
            if !b.is_static {
                b.mac = a.sha;
                b.last_seen_secs = secs;
            }
        }
        // Gratuitous ARP and probes (sender == target, or no sender) are announcements:
        // they must reach everyone.
        if a.op != 1 || a.spa == a.tpa || a.spa.is_unspecified() {
            return None;
        }
        let answer = self.bindings.get(&(d, a.tpa))?.mac;
        if answer == a.sha || !arp::reply_in_place(frame, payload, &a, answer) {
            return None;
        }
        let tag = self.port_state(ingress)?.cfg.egress_tag(out.vlan);
        out.set_one(out.vlan, EgressPort { port: ingress, tag });
        if let Some(dom) = self.domains.get_mut(usize::from(d)) {
            dom.stats.arp_suppressed += 1;
        }
        Some(Verdict::Reply)
    }

    /// When [`handle_timeout`](Self::handle_timeout) next has aging to do, if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        (self.next_sweep != Instant::MAX).then_some(self.next_sweep)
    }

    /// Ages out learned MACs and ARP bindings not seen for their domain's aging time.
    pub fn handle_timeout(&mut self, now: Instant) {
        if now < self.next_sweep {
            return;
        }
        let secs = now.as_secs();
        let agings: Vec<u64> = self
            .domains
            .iter()
            .map(|d| d.cfg.aging.as_secs().max(1))
            .collect();
        let expired = |d: u64, last: u32| {
            let aging = agings.get(d as usize).copied().unwrap_or(0);
            secs.saturating_sub(u64::from(last)) >= aging
        };
        let (ports, domains) = (&mut self.ports, &mut self.domains);
        let mut dynamic = false;
        self.table.retain(|k, e| {
            if e.kind == EntryKind::Static {
                return true;
            }
            let d = u64::from(key_domain(k));
            if !expired(d, e.last_seen_secs) {
                dynamic = true;
                return true;
            }
            if let Some(dom) = domains.get_mut(d as usize) {
                dom.stats.learned = dom.stats.learned.saturating_sub(1);
                dom.stats.aged_out += 1;
            }
            if let Some(Some(p)) = ports.get_mut(usize::from(e.port.0)) {
                p.stats.learned = p.stats.learned.saturating_sub(1);
            }
            false
        });
        self.bindings
            .retain(|(d, _), b| b.is_static || !expired(u64::from(*d), b.last_seen_secs));
        let interval = self
            .domains
            .iter()
            .map(|d| sweep_interval(d.cfg.aging))
            .min()
            .unwrap_or(Duration::from_secs(1));
        self.next_sweep = if dynamic || self.bindings.values().any(|b| !b.is_static) {
            now + interval
        } else {
            Instant::MAX
        };
    }
}

/// What the forwarding fast path reads and counts in: the MAC table's lines and the ports,
/// held from frame to frame while no frame needs the full path.
struct Fast<'a> {
    lines: Lines<'a>,
    ports: &'a mut [Option<PortState>],
    /// For the classifications of the frames ahead.
    vlan_domain: &'a VlanMap,
    /// The meta word of a source learned (or static: the state's low bit is ignored) and
    /// seen in this second, but for its port.
    seen: u64,
}

impl Fast<'_> {
    /// The common case, decided with two table reads and one port's counters: the source is
    /// in the table on the ingress port and was last seen in this second (so learning would
    /// write nothing, not even its time: its line stays clean), the frame is no ARP (which
    /// suppression may answer), and the destination is a unicast address in the table behind
    /// a port it may be sent to. Then the decision is [`decide_full`](Switch::decide_full)'s,
    /// a [`Verdict::Forward`] with the same counters, and this returns true; anything else (a
    /// frame to be dropped included: see [`Pre::dropped`]) returns false having changed
    /// nothing. `want` is the classification's pair of source and destination key words,
    /// as read.
    #[inline(always)]
    fn forward(&mut self, p: &Pre, want: (&[u64; 2], &[u64; 2]), out: &mut Egress) -> bool {
        // Both lines are read before either is needed, so that their misses overlap. The
        // source's entry must be live (learned or static: the state's low bit ignored) with
        // the port and time learning would give it.
        let src = self.lines.meta_of(want.0, p.src_hash);
        let dst = self.lines.meta_of(want.1, p.dst_hash);
        if src & !1 != self.seen | u64::from(p.class.expect)
            || dst == 0
            || p.dst_want[0] & MULTICAST == 0
        {
            return false;
        }
        let to = PortId((dst >> 16) as u16);
        let Some(Some(port)) = self.ports.get_mut(usize::from(to.0)) else {
            return false;
        };
        let c = &p.class;
        // The ingress port itself, or a port of its split-horizon group: see `Class::split`.
        if port.fast.untagged_class.split == c.split || p.len32 > port.fast.mtu32 {
            return false;
        }
        port.stats.tx_unicast += 1;
        out.set_one(
            c.vlan,
            EgressPort {
                port: to,
                tag: port.fast.egress_tag(c.vlan),
            },
        );
        true
    }

    /// Decides the frames of a batch into `out` from frame `start` on while
    /// [`forward`](Self::forward) can (each a [`Verdict::Forward`]) and returns how many it
    /// decided. Frame `i`'s classification is in slot `i % AHEAD` of `ring`; after deciding
    /// it, classifies frame `i + AHEAD` of `frames`, if there is one, into the slot and asks
    /// for its lines: the frames decided a chunk later, whose lines are then on their way
    /// while these are decided. Out of line, so that the loop has the registers to itself,
    /// and called once for a run of frames however many chunks it spans.
    #[inline(never)]
    fn forward_run<F: AsMut<[u8]>>(
        &mut self,
        ring: &mut [Pre; Switch::AHEAD],
        start: usize,
        frames: &mut [(PortId, F)],
        out: &mut [Egress],
    ) -> usize {
        if self.lines.is_empty() {
            return 0;
        }
        let n = frames.len().min(out.len());
        let mut i = start;
        while i < n {
            // The rest of the chunk of frame `i`, and the frames of the next chunk.
            let slot = i % Switch::AHEAD;
            let end = n.min(i - slot + Switch::AHEAD);
            let (Some(ps), Some(os)) = (ring.get_mut(slot..), out.get_mut(i..end)) else {
                break;
            };
            let ns = frames.get_mut(i + Switch::AHEAD..).unwrap_or_default();
            let run = self.chunk_run(ps, os, ns);
            i += run;
            if i < end {
                break;
            }
        }
        i - start
    }

    /// [`forward_run`](Self::forward_run) within a chunk: decides the frames of `ring` into
    /// `out` from the first on, classifying `next[i]` into slot `i` after deciding frame
    /// `i`, and returns how many it decided.
    #[inline(always)]
    fn chunk_run<F: AsMut<[u8]>>(
        &mut self,
        ring: &mut [Pre],
        out: &mut [Egress],
        next: &mut [(PortId, F)],
    ) -> usize {
        let both = next.len().min(ring.len()).min(out.len());
        let (ring, ring_rest) = ring.split_at_mut(both);
        let (out, out_rest) = out.split_at_mut(both);
        let mut n = 0;
        for ((p, o), (ingress, f)) in ring.iter_mut().zip(out).zip(next) {
            if !self.forward(p, (&p.src_want, &p.dst_want), o) {
                return n;
            }
            classify_into(
                self.ports,
                self.vlan_domain,
                self.lines,
                *ingress,
                f.as_mut(),
                p,
            );
            n += 1;
        }
        for (p, o) in ring_rest.iter().zip(out_rest) {
            if !self.forward(p, (&p.src_want, &p.dst_want), o) {
                return n;
            }
            n += 1;
        }
        n
    }
}

/// What a frame's classification found: everything the decision needs from the frame and
/// the configuration, in 80 bytes (a batch keeps one per frame).
#[derive(Debug, Clone, Copy)]
#[repr(align(16))]
struct Pre {
    /// The complement of the source's table key (domain index and MAC), twice: what a
    /// bucket holds for it, compared as is with two slots at a time.
    src_want: [u64; 2],
    /// The complement of the destination's table key, twice.
    dst_want: [u64; 2],
    /// The keys' hashes, for the table.
    src_hash: u64,
    dst_hash: u64,
    /// The payload's length (the frame's after the header and tag) as the fast path
    /// compares it with [`PortFast::mtu32`]: `u32::MAX` when it is longer.
    len32: u32,
    class: Class,
}

const _: () = assert!(core::mem::size_of::<Pre>() == 80);

/// What a classification takes from the ingress port and the frame's tag, but for the
/// domain: an untagged frame's is the port's [`PortFast::untagged_class`], copied whole.
#[derive(Debug, Clone, Copy)]
#[repr(C, align(8))]
struct Class {
    /// The ingress port's number in bits 16..32, where a table entry's meta word has its
    /// port: the meta word of a source learning would not change is this with the state and
    /// the second (see [`Fast::seen`]). In a classification, [`ARP_MARK`] too for an ARP
    /// frame.
    expect: u32,
    /// The ingress port's split word: its split-horizon group's number when it has one,
    /// `0x1_0000` plus its own number when it has none. Two ports' words are equal exactly
    /// when a frame from one may not leave on the other (the same port, or ports of one
    /// group), so the fast path tells both cases with one comparison.
    split: u32,
    vlan: u16,
    /// Offset of the payload (14 or 18).
    payload: u8,
    /// In a batch: why the frame is dropped (the rest of its classification is then unset).
    drop: Option<DropReason>,
}

impl Pre {
    /// A classification yet to be made.
    const NONE: Pre = Pre {
        src_want: [0; 2],
        dst_want: [0; 2],
        src_hash: 0,
        dst_hash: 0,
        len32: 0,
        class: Class {
            expect: 0,
            split: 0,
            vlan: 0,
            payload: 0,
            drop: None,
        },
    };

    /// The classification of a frame to be dropped for `reason`, in a batch.
    /// Its source key word is 0, which no key's complement is: the fast path, which does not
    /// look at `drop`, finds no source seen on the port (a slot without a key holds 0, but
    /// its meta word has no live state) and leaves the frame to the full path.
    fn dropped(reason: DropReason) -> Self {
        Pre {
            class: Class {
                drop: Some(reason),
                ..Self::NONE.class
            },
            ..Self::NONE
        }
    }

    #[inline]
    fn domain(&self) -> u16 {
        key_domain(!self.src_want[0])
    }
}

/// The classifications of the frames of a batch in flight, a chunk's worth, kept from batch
/// to batch so that a batch starts without filling them.
struct Scratch(Box<[Pre; Switch::AHEAD]>);

impl Default for Scratch {
    fn default() -> Self {
        Scratch(Box::new([Pre::NONE; Switch::AHEAD]))
    }
}

impl core::fmt::Debug for Scratch {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str("Scratch")
    }
}

/// Counts the frame as received on `ingress` and reads what the decision needs from the
/// frame and the configuration into `pre`, changing nothing else (`pre` only when the frame
/// is not to be dropped). A batch counts its frames before deciding any: the counters come
/// out the same, and the port is read once a frame. The classification is written in place,
/// not returned: a batch's array gets it without a copy. A function of the parts of the
/// fabric it reads, so that a batch keeps them at hand from frame to frame.
#[inline(always)]
fn classify(
    ports: &mut [Option<PortState>],
    vlan_domain: &VlanMap,
    ingress: PortId,
    frame: &[u8],
    pre: &mut Pre,
) -> Result<(), DropReason> {
    let Some(Some(port)) = ports.get_mut(usize::from(ingress.0)) else {
        return Err(unlikely(|| DropReason::PortDown));
    };
    port.stats.rx_frames += 1;
    port.stats.rx_bytes += frame.len() as u64;
    let port = &*port;
    // The addresses and EtherType as two little-endian words: a MAC is the low 48 bits of the
    // word at its offset, shifted up by 16 the MAC bits of its table key (see `key`).
    let Some((h, rest)) = frame.split_first_chunk::<14>() else {
        return Err(unlikely(|| DropReason::Truncated));
    };
    let (Some(a), Some(b)) = (h.first_chunk::<8>(), h.last_chunk::<8>()) else {
        return Err(unlikely(|| DropReason::Truncated));
    };
    let dst = u64::from_le_bytes(*a) << 16;
    let src = u64::from_le_bytes(*b);
    let (src, et) = (src << 16, (src >> 48) as u16);
    let tag = match rest.split_first_chunk::<4>() {
        _ if et != wire(TPID_8021Q) => None,
        Some(t) => Some(t),
        None => return Err(unlikely(|| DropReason::Truncated)),
    };
    // A group address (the I/G bit, bit 16, turned to the sign bit) or zero.
    if src.rotate_right(17) as i64 <= 0 {
        return Err(unlikely(|| DropReason::Malformed));
    }
    // IEEE 802.1Q ingress classification. Untagged and priority-tagged frames take the
    // port's own VLAN, whose domain the port keeps at hand (a port has a domain there only
    // if it has such a VLAN).
    match tag {
        None => classified(
            pre,
            port.fast.untagged_class,
            port.fast.untagged_base,
            (src, dst, et),
            rest.len(),
        ),
        Some((t, rest)) => classify_tagged(port, vlan_domain, t, (src, dst), rest.len(), pre),
    }
}

/// Writes a frame's classification into `pre`, given the class and key base from its port
/// and tag, its addresses as key bits, its EtherType and its payload's length.
#[inline(always)]
fn classified(
    pre: &mut Pre,
    class: Class,
    base: u64,
    (src, dst, ethertype): (u64, u64, u16),
    len: usize,
) -> Result<(), DropReason> {
    if base == NO_BASE {
        return Err(unlikely(|| DropReason::VlanMismatch));
    }
    let (src_want, dst_want) = (base ^ src, base ^ dst);
    *pre = Pre {
        src_want: [src_want; 2],
        dst_want: [dst_want; 2],
        // The keys' `key_hash`: the hash of the complement.
        src_hash: hash(src_want),
        dst_hash: hash(dst_want),
        len32: u32::try_from(len).unwrap_or(u32::MAX),
        class,
    };
    if ethertype == wire(ETHERTYPE_ARP) {
        pre.class.expect |= ARP_MARK;
    }
    Ok(())
}

/// [`classify`] from the tag `tag` on: the class and key base (see
/// [`PortFast::untagged_base`]) of a frame tagged on `port` ([`NO_BASE`] when the port does
/// not take the VLAN or it has no domain). Out of line and finishing the classification
/// itself, so that an untagged frame's classification keeps its registers.
#[inline(never)]
fn classify_tagged(
    port: &PortState,
    vlan_domain: &VlanMap,
    &[t0, t1, t2, t3]: &[u8; 4],
    (src, dst): (u64, u64),
    len: usize,
    pre: &mut Pre,
) -> Result<(), DropReason> {
    let t = u16::from_be_bytes([t0, t1]) & 0x0fff;
    let untagged = port.fast.untagged_class;
    let (class, base) = match t {
        0 => (untagged, port.fast.untagged_base),
        t if port.fast.trunk => match &port.cfg.vlan {
            VlanMode::Trunk { allowed, .. } if allowed.contains(t) => (
                Class {
                    vlan: t,
                    ..untagged
                },
                base_of(domain_of(vlan_domain, t)),
            ),
            _ => (untagged, NO_BASE),
        },
        _ => (untagged, NO_BASE),
    };
    let class = Class {
        payload: 18,
        ..class
    };
    classified(
        pre,
        class,
        base,
        (src, dst, u16::from_le_bytes([t2, t3])),
        len,
    )
}

/// The split word (see [`Class::split`]) of port `id` in split-horizon group `horizon`.
fn split_of(id: PortId, horizon: Option<HorizonGroup>) -> u32 {
    match horizon {
        Some(g) => u32::from(g.0),
        None => 0x1_0000 + u32::from(id.0),
    }
}

/// The split-horizon group of a port of split word `split` (see [`Class::split`]).
#[inline]
fn horizon_of(split: u32) -> Option<HorizonGroup> {
    u16::try_from(split).ok().map(HorizonGroup)
}

/// The key base of domain `d` ([`NO_BASE`] for [`NO_DOMAIN`]): the complement of the low
/// 16 bits of its table keys, with the high 48 bits set, so that XORed with the MAC bits of a
/// key it gives the complement of the key, what a bucket holds (see [`Pre::src_want`]).
fn base_of(d: u16) -> u64 {
    if d == NO_DOMAIN {
        NO_BASE
    } else {
        !u64::from(d)
    }
}

/// [`classify`] into `p`, then asks for the frame's two table lines (or marks `p` dropped).
#[inline(always)]
fn classify_into(
    ports: &mut [Option<PortState>],
    vlan_domain: &VlanMap,
    lines: Lines<'_>,
    ingress: PortId,
    frame: &[u8],
    p: &mut Pre,
) {
    match classify(ports, vlan_domain, ingress, frame, p) {
        Ok(()) => {
            lines.prefetch(p.src_hash);
            lines.prefetch(p.dst_hash);
        }
        Err(r) => *p = Pre::dropped(r),
    }
}

/// [`classify_into`] for each frame of `frames` into `pres`. Out of line, so that the loop
/// has the registers to itself.
#[inline(never)]
fn classify_run<F: AsMut<[u8]>>(
    ports: &mut [Option<PortState>],
    vlan_domain: &VlanMap,
    lines: Lines<'_>,
    frames: &mut [(PortId, F)],
    pres: &mut [Pre],
) {
    for ((ingress, f), p) in frames.iter_mut().zip(pres) {
        classify_into(ports, vlan_domain, lines, *ingress, f.as_mut(), p);
    }
}

/// The reason `r` gives, on a path the compiler is told is unlikely: a classification's
/// drops stay out of the way of the frames it passes on. A function of its own for each
/// place it is called from, which takes no argument: the frames passed on set up no register
/// for it.
#[cold]
#[inline(never)]
fn unlikely(r: impl FnOnce() -> DropReason) -> DropReason {
    r()
}

/// The bridge domain index of each VLAN id, [`NO_DOMAIN`] for none.
type VlanMap = [u16; 4096];

/// The index of the bridge domain of `vlan` in the VLAN map, [`NO_DOMAIN`] if it has none.
#[inline]
fn domain_of(vlan_domain: &VlanMap, vlan: u16) -> u16 {
    vlan_domain
        .get(usize::from(vlan))
        .copied()
        .unwrap_or(NO_DOMAIN)
}

/// `now` in whole seconds, as the table keeps time.
#[inline]
fn secs_of(now: Instant) -> u32 {
    u32::try_from(now.as_secs()).unwrap_or(u32::MAX)
}

fn sweep_interval(aging: Duration) -> Duration {
    (aging / 4).max(Duration::from_secs(1))
}

#[cfg(test)]
mod tests;
