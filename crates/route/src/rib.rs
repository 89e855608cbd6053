//! The RIB: routes from several sources, best-path selection per prefix, ECMP, and the FIB
//! that follows it.

use crate::fib::{Fib, FibError, FibTable, MAX_NEXT_HOP, NextHopId};
use crate::lpm::IpLpm;
use arc_swap::ArcSwap;
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use gatekit_packet::PortId;
use ipnet::IpNet;
use std::collections::HashMap;
use std::sync::Arc;

/// Where a route came from. Each source has a default administrative distance
/// ([`Source::default_distance`]); a route may override it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
#[non_exhaustive]
pub enum Source {
    /// A subnet of one of the gateway's own interfaces.
    Connected,
    /// Configured by the operator.
    Static,
    /// An overlay client's or overlay peer's addresses (cryptokey routing).
    Overlay,
    /// Learned from a tunnel: IKE traffic selectors, a GRE/VXLAN peer's configured subnets.
    Tunnel,
    /// Advertised by another gateway of the mesh.
    Mesh,
    /// Learned from a BGP speaker.
    Bgp,
}

impl Source {
    /// Every source.
    pub const ALL: [Source; 6] = [
        Source::Connected,
        Source::Static,
        Source::Overlay,
        Source::Tunnel,
        Source::Mesh,
        Source::Bgp,
    ];

    /// The administrative distance routes of this source get unless they say otherwise:
    /// lower is preferred. Connected 0 and static 1 as on most routers; overlay 5 and tunnel
    /// 10 (the gateway's own authoritative knowledge); BGP 20 (external BGP); mesh 100.
    pub const fn default_distance(self) -> u8 {
        match self {
            Source::Connected => 0,
            Source::Static => 1,
            Source::Overlay => 5,
            Source::Tunnel => 10,
            Source::Bgp => 20,
            Source::Mesh => 100,
        }
    }

    /// The lower-case name used in configuration and output.
    pub const fn as_str(self) -> &'static str {
        match self {
            Source::Connected => "connected",
            Source::Static => "static",
            Source::Overlay => "overlay",
            Source::Tunnel => "tunnel",
            Source::Mesh => "mesh",
            Source::Bgp => "bgp",
        }
    }

    const fn bit(self) -> u8 {
        1 << (self as u8)
    }
}

impl core::fmt::Display for Source {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.write_str(self.as_str())
    }
}

impl core::str::FromStr for Source {
    type Err = RibError;
    fn from_str(s: &str) -> Result<Self, RibError> {
        Source::ALL
            .into_iter()
            .find(|x| x.as_str().eq_ignore_ascii_case(s))
            .ok_or_else(|| RibError::UnknownSource(s.to_string()))
    }
}

/// Where packets for a route go: out of a port, possibly via a gateway address on it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct NextHop {
    /// The egress port (interface, tunnel, overlay peer) in the gateway's pipeline.
    pub port: PortId,
    /// The neighbour to send to, or `None` for a directly attached destination.
    pub via: Option<IpAddr>,
}

impl NextHop {
    /// Out of `port`, directly attached.
    pub const fn port(port: PortId) -> Self {
        NextHop { port, via: None }
    }
    /// Out of `port` via the neighbour `via`.
    pub const fn via(port: PortId, via: IpAddr) -> Self {
        NextHop {
            port,
            via: Some(via),
        }
    }
}

/// A route as sources offer it to the RIB.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Route {
    /// The destination (kept in canonical form, host bits clear).
    pub prefix: IpNet,
    /// Who offered it.
    pub source: Source,
    /// Where it leads.
    pub next_hop: NextHop,
    /// Administrative distance: the preference between sources, lower wins.
    pub distance: u8,
    /// The preference within a distance, lower wins.
    pub metric: u32,
    /// A free tag carried through redistribution (loop prevention, policy).
    pub tag: u32,
}

impl Route {
    /// A route with the source's default distance, metric 0 and tag 0.
    pub fn new(prefix: IpNet, source: Source, next_hop: NextHop) -> Self {
        Route {
            prefix: prefix.trunc(),
            source,
            next_hop,
            distance: source.default_distance(),
            metric: 0,
            tag: 0,
        }
    }
    /// With this metric.
    pub fn metric(mut self, metric: u32) -> Self {
        self.metric = metric;
        self
    }
    /// With this administrative distance.
    pub fn distance(mut self, distance: u8) -> Self {
        self.distance = distance;
        self
    }
    /// With this tag.
    pub fn tag(mut self, tag: u32) -> Self {
        self.tag = tag;
        self
    }
    fn same_path(&self, source: Source, next_hop: &NextHop) -> bool {
        self.source == source && self.next_hop == *next_hop
    }
}

/// A RIB operation was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RibError {
    /// The next hop's gateway address is not of the prefix's family.
    #[error("route {prefix}: next hop {via} is not of the prefix's address family")]
    FamilyMismatch {
        /// The route's prefix.
        prefix: IpNet,
        /// The gateway address.
        via: IpAddr,
    },
    /// More distinct next-hop sets than the FIB can number.
    #[error("too many distinct next-hop groups")]
    TooManyGroups,
    /// A source name that is not one of [`Source::ALL`].
    #[error(
        "unknown route source {0:?} (expected connected, static, overlay, tunnel, mesh or bgp)"
    )]
    UnknownSource(String),
    /// The FIB refused a change.
    #[error(transparent)]
    Fib(#[from] FibError),
}

/// One candidate route of a prefix, with whether it may be selected.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Candidate {
    /// The route.
    pub route: Route,
    /// False if disabled by [`Rib::set_route_enabled`].
    pub enabled: bool,
}

#[derive(Debug, Clone, Default)]
struct PrefixRoutes {
    candidates: Vec<Candidate>,
    /// The selected paths (several for ECMP), sorted by next hop.
    best: Vec<Route>,
    group: Option<NextHopId>,
}

/// Interned next-hop sets: the FIB stores a set's id, the data path picks a member by flow hash.
#[derive(Debug, Clone, Default)]
struct Groups {
    ids: HashMap<Vec<NextHop>, NextHopId>,
    slots: Vec<Option<(Arc<[NextHop]>, usize)>>,
    free: Vec<NextHopId>,
}

impl Groups {
    fn acquire(&mut self, hops: Vec<NextHop>) -> Result<NextHopId, RibError> {
        if let Some(&id) = self.ids.get(&hops) {
            if let Some(Some((_, refs))) = self.slots.get_mut(id as usize) {
                *refs += 1;
            }
            return Ok(id);
        }
        let id = match self.free.pop() {
            Some(id) => id,
            None => {
                let id = self.slots.len() as u64;
                if id > u64::from(MAX_NEXT_HOP) {
                    return Err(RibError::TooManyGroups);
                }
                self.slots.push(None);
                id as NextHopId
            }
        };
        self.slots[id as usize] = Some((hops.clone().into(), 1));
        self.ids.insert(hops, id);
        Ok(id)
    }

    fn release(&mut self, id: NextHopId) {
        let Some(slot) = self.slots.get_mut(id as usize) else {
            return;
        };
        if let Some((hops, refs)) = slot {
            *refs -= 1;
            if *refs == 0 {
                self.ids.remove(&hops[..]);
                *slot = None;
                self.free.push(id);
            }
        }
    }
}

/// Counters of what the RIB has done.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct RibStats {
    /// Routes added or replaced.
    pub adds: u64,
    /// Routes withdrawn.
    pub withdrawals: u64,
    /// Times a prefix's selected paths changed.
    pub best_changes: u64,
    /// FIB commits that published a new forwarding table.
    pub commits: u64,
}

/// The routing information base: every candidate route from every source, the best paths
/// per prefix, and the FIBs (IPv4 and IPv6) that follow them.
///
/// Selection per prefix: among enabled routes whose source is enabled and whose port is up,
/// the lowest administrative distance, then the lowest metric; every route tied on both
/// (up to [`Rib::set_max_paths`], default 8, lowest next hops first) forms an ECMP group.
/// Changes reach the data path at [`commit`](Self::commit), which publishes a new
/// [`Forwarding`] table atomically.
///
/// ```
/// use gatekit_route::{NextHop, Rib, Route, Source};
/// use gatekit_packet::PortId;
///
/// let mut rib = Rib::new();
/// let lan = NextHop::port(PortId(1));
/// let tunnel = NextHop::via(PortId(2), "198.51.100.1".parse()?);
/// rib.add(Route::new("10.0.0.0/8".parse()?, Source::Mesh, tunnel))?;
/// rib.add(Route::new("10.1.0.0/16".parse()?, Source::Connected, lan))?;
/// rib.add(Route::new("10.0.0.0/8".parse()?, Source::Static, lan))?;  // beats the mesh route
/// rib.commit();
///
/// let fwd = rib.reader().load();
/// assert_eq!(fwd.lookup("10.2.3.4".parse()?, 0), Some(lan));
/// rib.withdraw(&"10.0.0.0/8".parse()?, Source::Static, &lan);
/// rib.commit();
/// assert_eq!(rib.reader().load().lookup("10.2.3.4".parse()?, 0), Some(tunnel));
/// # Ok::<(), Box<dyn std::error::Error>>(())
/// ```
pub struct Rib {
    prefixes: IpLpm<PrefixRoutes>,
    fib4: Fib<Ipv4Addr>,
    fib6: Fib<Ipv6Addr>,
    groups: Groups,
    disabled_sources: u8,
    down_ports: Vec<PortId>,
    max_paths: usize,
    stats: RibStats,
    shared: Arc<ArcSwap<Forwarding>>,
}

impl core::fmt::Debug for Rib {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Rib")
            .field("prefixes", &self.prefixes.len())
            .field("stats", &self.stats)
            .finish()
    }
}

impl Default for Rib {
    fn default() -> Self {
        Self::new()
    }
}

impl Rib {
    /// An empty RIB (its empty forwarding table is already published).
    pub fn new() -> Self {
        let fib4 = Fib::new();
        let fib6 = Fib::new();
        let fwd = Forwarding {
            v4: fib4.table(),
            v6: fib6.table(),
            groups: Vec::new(),
        };
        Rib {
            prefixes: IpLpm::new(),
            fib4,
            fib6,
            groups: Groups::default(),
            disabled_sources: 0,
            down_ports: Vec::new(),
            max_paths: 8,
            stats: RibStats::default(),
            shared: Arc::new(ArcSwap::from_pointee(fwd)),
        }
    }

    /// At most `n` (at least 1) equal-cost paths per prefix. Applies to later selections.
    pub fn set_max_paths(&mut self, n: usize) {
        self.max_paths = n.max(1);
    }

    /// Adds a route, or replaces the route of the same prefix, source and next hop (its
    /// distance, metric and tag are updated; a disabled route stays disabled).
    pub fn add(&mut self, route: Route) -> Result<(), RibError> {
        let route = Route {
            prefix: route.prefix.trunc(),
            ..route
        };
        if let Some(via) = route.next_hop.via
            && via.is_ipv4() != matches!(route.prefix, IpNet::V4(_))
        {
            return Err(RibError::FamilyMismatch {
                prefix: route.prefix,
                via,
            });
        }
        self.stats.adds += 1;
        if self.prefixes.get(&route.prefix).is_none() {
            self.prefixes.insert(route.prefix, PrefixRoutes::default());
        }
        if let Some(entry) = self.prefixes.get_mut(&route.prefix) {
            match entry
                .candidates
                .iter_mut()
                .find(|c| c.route.same_path(route.source, &route.next_hop))
            {
                Some(c) => c.route = route,
                None => entry.candidates.push(Candidate {
                    route,
                    enabled: true,
                }),
            }
        }
        self.reselect(&route.prefix)
    }

    /// Withdraws the route of `prefix` from `source` via `next_hop`; returns it if it was there.
    pub fn withdraw(
        &mut self,
        prefix: &IpNet,
        source: Source,
        next_hop: &NextHop,
    ) -> Option<Route> {
        let prefix = prefix.trunc();
        let entry = self.prefixes.get_mut(&prefix)?;
        let i = entry
            .candidates
            .iter()
            .position(|c| c.route.same_path(source, next_hop))?;
        let gone = entry.candidates.swap_remove(i).route;
        self.stats.withdrawals += 1;
        // Removing a route only ever frees a group id, so this cannot fail.
        let _ = self.reselect(&prefix);
        Some(gone)
    }

    /// Withdraws every route of `prefix` from `source` (all its next hops); returns how many.
    pub fn withdraw_prefix(&mut self, prefix: &IpNet, source: Source) -> usize {
        let prefix = prefix.trunc();
        let Some(entry) = self.prefixes.get_mut(&prefix) else {
            return 0;
        };
        let before = entry.candidates.len();
        entry.candidates.retain(|c| c.route.source != source);
        let n = before - entry.candidates.len();
        self.stats.withdrawals += n as u64;
        let _ = self.reselect(&prefix);
        n
    }

    /// Withdraws every route of `source` (a peer went away, a protocol restarted).
    pub fn withdraw_source(&mut self, source: Source) -> usize {
        let prefixes = self.prefixes_where(|c| c.route.source == source);
        prefixes
            .iter()
            .map(|p| self.withdraw_prefix(p, source))
            .sum()
    }

    /// Enables or disables one route without withdrawing it; returns false if there is no such
    /// route.
    pub fn set_route_enabled(
        &mut self,
        prefix: &IpNet,
        source: Source,
        next_hop: &NextHop,
        enabled: bool,
    ) -> bool {
        let prefix = prefix.trunc();
        let Some(entry) = self.prefixes.get_mut(&prefix) else {
            return false;
        };
        let Some(c) = entry
            .candidates
            .iter_mut()
            .find(|c| c.route.same_path(source, next_hop))
        else {
            return false;
        };
        c.enabled = enabled;
        let _ = self.reselect(&prefix);
        true
    }

    /// Enables or disables every route of a source (disabled routes stay in the RIB).
    pub fn set_source_enabled(&mut self, source: Source, enabled: bool) {
        if enabled {
            self.disabled_sources &= !source.bit();
        } else {
            self.disabled_sources |= source.bit();
        }
        for p in self.prefixes_where(|c| c.route.source == source) {
            let _ = self.reselect(&p);
        }
    }

    /// Marks a port up or down; routes out of a down port are not selected.
    pub fn set_port_up(&mut self, port: PortId, up: bool) {
        self.down_ports.retain(|&p| p != port);
        if !up {
            self.down_ports.push(port);
        }
        for p in self.prefixes_where(|c| c.route.next_hop.port == port) {
            let _ = self.reselect(&p);
        }
    }

    fn prefixes_where(&self, f: impl Fn(&Candidate) -> bool) -> Vec<IpNet> {
        self.prefixes
            .iter()
            .filter(|(_, e)| e.candidates.iter().any(&f))
            .map(|(p, _)| p)
            .collect()
    }

    fn eligible(&self, c: &Candidate) -> bool {
        c.enabled
            && self.disabled_sources & c.route.source.bit() == 0
            && !self.down_ports.contains(&c.route.next_hop.port)
    }

    /// Recomputes the best paths of `prefix` and brings the FIB along.
    fn reselect(&mut self, prefix: &IpNet) -> Result<(), RibError> {
        let Some(entry) = self.prefixes.get(prefix) else {
            return Ok(());
        };
        let mut best: Vec<Route> = Vec::new();
        for c in entry.candidates.iter().filter(|c| self.eligible(c)) {
            let r = c.route;
            match best.first() {
                Some(b) if (r.distance, r.metric) > (b.distance, b.metric) => {}
                Some(b) if (r.distance, r.metric) == (b.distance, b.metric) => best.push(r),
                _ => best = vec![r],
            }
        }
        best.sort_by_key(|r| (r.next_hop, r.source));
        best.dedup_by_key(|r| r.next_hop);
        best.truncate(self.max_paths);
        if best == entry.best {
            if entry.candidates.is_empty() {
                self.prefixes.remove(prefix);
            }
            return Ok(());
        }
        self.stats.best_changes += 1;
        let hops: Vec<NextHop> = best.iter().map(|r| r.next_hop).collect();
        let old_group = entry.group;
        let new_group = if hops.is_empty() {
            None
        } else {
            Some(self.groups.acquire(hops)?)
        };
        match (prefix, new_group) {
            (IpNet::V4(p), Some(g)) => {
                self.fib4.insert(*p, g)?;
            }
            (IpNet::V6(p), Some(g)) => {
                self.fib6.insert(*p, g)?;
            }
            (IpNet::V4(p), None) => {
                self.fib4.remove(p);
            }
            (IpNet::V6(p), None) => {
                self.fib6.remove(p);
            }
        }
        if let Some(g) = old_group {
            self.groups.release(g);
        }
        if let Some(entry) = self.prefixes.get_mut(prefix) {
            entry.best = best;
            entry.group = new_group;
            if entry.candidates.is_empty() {
                self.prefixes.remove(prefix);
            }
        }
        Ok(())
    }

    /// The selected paths of exactly `prefix` (empty if it has none).
    pub fn best(&self, prefix: &IpNet) -> &[Route] {
        self.prefixes
            .get(&prefix.trunc())
            .map_or(&[][..], |e| &e.best[..])
    }

    /// Every candidate route of exactly `prefix`.
    pub fn candidates(&self, prefix: &IpNet) -> &[Candidate] {
        self.prefixes
            .get(&prefix.trunc())
            .map_or(&[][..], |e| &e.candidates[..])
    }

    /// The longest prefix with a selected path that contains `addr`, and its paths (what the
    /// committed FIB will forward by).
    pub fn lookup(&self, addr: IpAddr) -> Option<(IpNet, &[Route])> {
        match addr {
            IpAddr::V4(a) => self
                .prefixes
                .v4
                .matches(a)
                .find(|(_, e)| !e.best.is_empty())
                .map(|(p, e)| (IpNet::V4(p), &e.best[..])),
            IpAddr::V6(a) => self
                .prefixes
                .v6
                .matches(a)
                .find(|(_, e)| !e.best.is_empty())
                .map(|(p, e)| (IpNet::V6(p), &e.best[..])),
        }
    }

    /// Every selected route (all paths of every prefix that has one), in no particular order.
    pub fn best_routes(&self) -> impl Iterator<Item = &Route> + '_ {
        self.prefixes.iter().flat_map(|(_, e)| e.best.iter())
    }

    /// Number of prefixes with at least one candidate route.
    pub fn len(&self) -> usize {
        self.prefixes.len()
    }

    /// True if the RIB holds no route.
    pub fn is_empty(&self) -> bool {
        self.prefixes.is_empty()
    }

    /// What the RIB has done so far.
    pub fn stats(&self) -> RibStats {
        self.stats
    }

    /// True if selection changes are waiting for [`commit`](Self::commit).
    pub fn has_pending(&self) -> bool {
        self.fib4.has_pending() || self.fib6.has_pending()
    }

    /// Compiles pending changes into the FIBs and publishes a new [`Forwarding`] table.
    pub fn commit(&mut self) {
        if !self.has_pending() {
            return;
        }
        self.fib4.commit();
        self.fib6.commit();
        let groups = self
            .groups
            .slots
            .iter()
            .map(|s| {
                s.as_ref()
                    .map_or_else(|| Arc::from(Vec::new()), |(h, _)| h.clone())
            })
            .collect();
        self.shared.store(Arc::new(Forwarding {
            v4: self.fib4.table(),
            v6: self.fib6.table(),
            groups,
        }));
        self.stats.commits += 1;
    }

    /// A handle for data-path workers, which always loads the forwarding table published last.
    pub fn reader(&self) -> ForwardingReader {
        ForwardingReader {
            shared: self.shared.clone(),
        }
    }
}

/// A published, immutable forwarding table: the IPv4 and IPv6 FIBs and their next-hop groups.
#[derive(Debug, Clone)]
pub struct Forwarding {
    /// The IPv4 FIB (values are group ids, see [`Forwarding::group`]).
    pub v4: Arc<FibTable<Ipv4Addr>>,
    /// The IPv6 FIB.
    pub v6: Arc<FibTable<Ipv6Addr>>,
    groups: Vec<Arc<[NextHop]>>,
}

impl Forwarding {
    /// The members of a next-hop group (empty for an unknown id).
    pub fn group(&self, id: NextHopId) -> &[NextHop] {
        self.groups.get(id as usize).map_or(&[][..], |g| &g[..])
    }

    /// Picks the member of group `id` for a flow: hash-threshold selection (RFC 2992), so a
    /// flow keeps its path and adding or removing a path moves few flows.
    #[inline]
    pub fn select(&self, id: NextHopId, flow_hash: u32) -> Option<NextHop> {
        let g = self.group(id);
        let i = (u64::from(flow_hash) * g.len() as u64) >> 32;
        g.get(i as usize).copied()
    }

    /// The next hop for a destination and a flow hash (see
    /// [`FlowKey::hash`](gatekit_packet::FlowKey::hash)), or `None` if there is no route.
    #[inline]
    pub fn lookup(&self, dst: IpAddr, flow_hash: u32) -> Option<NextHop> {
        let id = match dst {
            IpAddr::V4(a) => self.v4.lookup(a)?,
            IpAddr::V6(a) => self.v6.lookup(a)?,
        };
        self.select(id, flow_hash)
    }
}

/// A handle that loads the latest [`Forwarding`] table; cheap to clone, one per worker.
#[derive(Clone, Debug)]
pub struct ForwardingReader {
    shared: Arc<ArcSwap<Forwarding>>,
}

impl ForwardingReader {
    /// The table published last. Hold it for a batch, then load again.
    pub fn load(&self) -> Arc<Forwarding> {
        self.shared.load_full()
    }
}
