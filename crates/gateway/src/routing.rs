//! The gateway's routing: gatekit-route's RIB fed from the config, the compiled FIB the data
//! path forwards by, and what the gateway advertises to the mesh.
//!
//! Sources, with their default administrative distance (lower wins, then the metric):
//!
//! | source | routes | distance |
//! |---|---|---|
//! | connected | each TUN interface's prefix; the gateway's own addresses (host routes to itself) | 0 |
//! | static | `[[route]]` (`distance` overrides, for floating routes) | 1 |
//! | overlay | the `[overlay]` prefixes, into the overlay's interface | 5 |
//! | tunnel | remote traffic selectors of tunnel-mode SAs (`install_routes`), `[[gre]] subnets` | 10 |
//! | mesh | prefixes peer gateways advertise (`mesh_prefixes`, [`Routing::import_mesh`]) | 100 |
//!
//! The data path never walks the RIB: it looks destinations up in the [`Forwarding`] table the
//! RIB compiled (a Poptrie per family), loaded once after each change. Withdrawing or disabling
//! a route re-selects its prefix and the next best route takes over at the next commit.
//!
//! Advertisement: a [`Redistributor`] exports the selected routes of the prefixes marked
//! `advertise` (connected, static and overlay sources) into [`Source::Mesh`], with the
//! `[advertise]` metric and tag. The result is what this gateway offers its peers
//! ([`Routing::advertised`], shown by status, metrics and `gatekitctl advertised`). No mesh
//! control protocol exists yet to carry it: peers' prefixes come from their config entry
//! (`mesh_prefixes`) or from whoever calls [`Routing::import_mesh`] (the in-memory lab hands
//! one gateway's advertisements to the other). Imports pass a [`Redistributor`] that refuses
//! routes carrying this gateway's own tag, so an advertisement never loops back.

use crate::config::{self, Config, InterfaceKind};
use crate::filter;
use crate::pipeline::NextHop;
use crate::status::{AdvertStatus, RouteStatus};
use gatekit_packet::PortId;
use gatekit_route::{
    Forwarding, IpNet, NextHop as RibHop, PrefixList, PrefixListEntry, Redistribution,
    Redistributor, Rib, RibError, Route, Source,
};
use std::collections::{BTreeMap, BTreeSet};
use std::net::IpAddr;
use std::sync::Arc;

/// The RIB port of the gateway itself (its own addresses).
const LOCAL_PORT: PortId = PortId(u16::MAX);

/// The RIB (and firewall) port of a next hop.
pub fn nexthop_port(nh: NextHop) -> PortId {
    match nh {
        NextHop::Iface(i) => PortId(i as u16),
        NextHop::Ipsec(p) => filter::peer_port(p),
        NextHop::Gre(g) => filter::gre_port(g),
        NextHop::Local => LOCAL_PORT,
    }
}

/// The next hop of a RIB (or firewall) port.
pub fn port_nexthop(p: PortId) -> NextHop {
    match p.0 {
        u16::MAX => NextHop::Local,
        n @ 0..256 => NextHop::Iface(usize::from(n)),
        n @ 256..512 => NextHop::Ipsec(usize::from(n - 256)),
        n => NextHop::Gre(usize::from(n - 512)),
    }
}

fn hop(nh: NextHop) -> RibHop {
    RibHop::port(nexthop_port(nh))
}

/// A prefix as one gateway advertises it to another.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Advertisement {
    /// The prefix.
    pub prefix: IpNet,
    /// Its metric as advertised.
    pub metric: u32,
    /// Its tag (the advertising gateway's, for loop prevention).
    pub tag: u32,
}

impl Advertisement {
    /// A prefix a peer advertises as its config entry says (`mesh_prefixes`): metric 0, no
    /// tag.
    fn configured(prefix: &IpNet) -> Self {
        Advertisement {
            prefix: *prefix,
            metric: 0,
            tag: 0,
        }
    }
}

/// Why the routing table could not be built or changed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum RoutingError {
    /// The RIB refused a route.
    #[error("route {prefix} ({origin}): {error}")]
    Rib {
        /// The route's prefix.
        prefix: IpNet,
        /// Its source.
        origin: Source,
        /// Why.
        error: RibError,
    },
    /// The overlay's address plan does not check.
    #[error("overlay: {0}")]
    Overlay(String),
    /// The `[advertise]` prefix list does not parse.
    #[error("advertise.prefix_list: {0}")]
    PrefixList(String),
    /// A mesh peer that is neither an IPsec peer nor a GRE tunnel in `ip` mode.
    #[error("`{0}` is not an IPsec peer or a GRE tunnel in `ip` mode")]
    UnknownPeer(String),
}

/// The gateway's routing state: the RIB, its compiled forwarding table, and the policies.
pub struct Routing {
    rib: Rib,
    /// The table published last; what the data path looks up.
    fwd: Arc<Forwarding>,
    /// Whether any prefix has several paths (the data path hashes flows only then).
    ecmp: bool,
    /// Every prefix ever given to the RIB (the RIB is listed by prefix).
    prefixes: BTreeSet<IpNet>,
    export: Redistributor,
    import: Redistributor,
    tag: u32,
    /// Mesh routes imported by [`Routing::import_mesh`], per peer, re-imported on reload.
    imported: BTreeMap<String, Vec<Advertisement>>,
}

impl std::fmt::Debug for Routing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Routing")
            .field("rib", &self.rib)
            .field("tag", &self.tag)
            .finish_non_exhaustive()
    }
}

impl Routing {
    /// The RIB of a validated config, committed: connected, static, overlay and
    /// tunnel-learned routes, the configured peers' mesh prefixes, and the export policy.
    pub fn new(cfg: &Config) -> Result<Routing, RoutingError> {
        let tag = cfg.advertise.tag_for(&cfg.gateway.name);
        let rib = Rib::new();
        let fwd = rib.reader().load();
        let mut r = Routing {
            rib,
            fwd,
            ecmp: false,
            prefixes: BTreeSet::new(),
            export: export_policy(cfg, tag)?,
            import: Redistributor::new(vec![
                Redistribution::new(&[Source::Mesh], Source::Mesh).deny_tag(tag),
            ]),
            tag,
            imported: BTreeMap::new(),
        };
        for (i, iface) in cfg.interface.iter().enumerate() {
            let Some(addr) = iface.address else { continue };
            if iface.kind == InterfaceKind::Tun {
                r.add(Route::new(
                    addr.trunc(),
                    Source::Connected,
                    hop(NextHop::Iface(i)),
                ))?;
            }
            r.add_local(addr.addr())?;
        }
        if !cfg.underlay.address.is_unspecified() {
            r.add_local(cfg.underlay.address)?;
        }
        for rt in &cfg.route {
            let nh = match cfg.resolve_via(rt.via.get_ref()) {
                Some(config::Via::Interface(i)) => NextHop::Iface(i),
                Some(config::Via::Ipsec(p)) => NextHop::Ipsec(p),
                Some(config::Via::Gre(g)) => NextHop::Gre(g),
                None => continue, // validation guarantees this does not happen
            };
            let mut route = Route::new(rt.prefix, Source::Static, hop(nh)).metric(rt.metric);
            if let Some(d) = rt.distance {
                route = route.distance(d);
            }
            r.add(route)?;
        }
        if let Some(o) = &cfg.overlay {
            let plan = match cfg.overlay_plan() {
                Some(Ok(plan)) => plan,
                Some(Err(e)) => return Err(RoutingError::Overlay(e.to_string())),
                None => return Err(RoutingError::Overlay("no plan".into())),
            };
            let iface = cfg
                .interface
                .iter()
                .position(|i| &i.name == o.interface.get_ref())
                .ok_or_else(|| RoutingError::Overlay("no such interface".into()))?;
            for p in plan.prefixes() {
                r.add(Route::new(*p, Source::Overlay, hop(NextHop::Iface(iface))))?;
            }
            for a in plan.gateway() {
                r.add_local(*a)?;
            }
        }
        for (pi, p) in cfg.ipsec.peer.iter().enumerate() {
            let peer = hop(NextHop::Ipsec(pi));
            if p.install_routes {
                let tunnel = p.tunnel.iter().filter(|t| t.mode == config::Mode::Tunnel);
                for ts in tunnel.flat_map(|t| &t.remote_ts) {
                    r.add(Route::new(*ts, Source::Tunnel, peer))?;
                }
            }
            r.import_routes(peer, p.mesh_prefixes.iter().map(Advertisement::configured))?;
        }
        for (gi, g) in cfg.gre.iter().enumerate() {
            let tunnel = hop(NextHop::Gre(gi));
            for s in &g.subnets {
                r.add(Route::new(*s, Source::Tunnel, tunnel))?;
            }
            r.import_routes(
                tunnel,
                g.mesh_prefixes.iter().map(Advertisement::configured),
            )?;
        }
        r.commit();
        Ok(r)
    }

    fn add(&mut self, route: Route) -> Result<(), RoutingError> {
        self.prefixes.insert(route.prefix.trunc());
        self.rib.add(route).map_err(|error| RoutingError::Rib {
            prefix: route.prefix,
            origin: route.source,
            error,
        })
    }

    fn add_local(&mut self, addr: IpAddr) -> Result<(), RoutingError> {
        self.add(Route::new(
            IpNet::from(addr),
            Source::Connected,
            RibHop::port(LOCAL_PORT),
        ))
    }

    /// Adds the routes of `adverts` the import policy passes, as mesh routes via `peer`.
    fn import_routes(
        &mut self,
        peer: RibHop,
        adverts: impl IntoIterator<Item = Advertisement>,
    ) -> Result<usize, RoutingError> {
        let mut n = 0;
        for a in adverts {
            let offered = Route::new(a.prefix, Source::Mesh, peer)
                .metric(a.metric)
                .tag(a.tag);
            if let Some(route) = self.import.apply(&offered, Source::Mesh) {
                self.add(route)?;
                n += 1;
            }
        }
        Ok(n)
    }

    /// Publishes the RIB's pending changes and loads the new forwarding table.
    fn commit(&mut self) {
        self.rib.commit();
        self.fwd = self.rib.reader().load();
        let mut seen = BTreeSet::new();
        self.ecmp = self.rib.best_routes().any(|r| !seen.insert(r.prefix));
    }

    /// Where the FIB sends `dst`; `flow_hash` picks among equal-cost paths (see
    /// [`needs_flow_hash`](Self::needs_flow_hash)).
    #[inline]
    pub fn lookup(&self, dst: IpAddr, flow_hash: u32) -> Option<NextHop> {
        self.fwd
            .lookup(dst, flow_hash)
            .map(|h| port_nexthop(h.port))
    }

    /// True when some prefix has equal-cost paths, so lookups need the packet's flow hash.
    #[inline]
    pub fn needs_flow_hash(&self) -> bool {
        self.ecmp
    }

    /// The RIB.
    pub fn rib(&self) -> &Rib {
        &self.rib
    }

    /// The forwarding table the data path uses.
    pub fn forwarding(&self) -> &Forwarding {
        &self.fwd
    }

    /// The tag this gateway's advertisements carry.
    pub fn tag(&self) -> u32 {
        self.tag
    }

    /// Enables or disables the route of `prefix` from `source` via `nh` (it stays in the
    /// RIB); the next best route takes over. False if there is no such route.
    pub fn set_route_enabled(
        &mut self,
        prefix: IpNet,
        source: Source,
        nh: NextHop,
        enabled: bool,
    ) -> bool {
        let done = self
            .rib
            .set_route_enabled(&prefix, source, &hop(nh), enabled);
        self.commit();
        done
    }

    /// Withdraws the route of `prefix` from `source` via `nh`; the next best route takes
    /// over. False if there was no such route.
    pub fn withdraw(&mut self, prefix: IpNet, source: Source, nh: NextHop) -> bool {
        let gone = self.rib.withdraw(&prefix, source, &hop(nh)).is_some();
        self.commit();
        gone
    }

    /// Marks a next hop (interface, IPsec peer, GRE tunnel) up or down; routes through a down
    /// one are not selected.
    pub fn set_up(&mut self, nh: NextHop, up: bool) {
        self.rib.set_port_up(nexthop_port(nh), up);
        self.commit();
    }

    /// Replaces the mesh routes learned from `peer` (an IPsec peer or a GRE tunnel in `ip`
    /// mode) with `adverts`, through the import policy (routes carrying this gateway's own tag
    /// are refused); returns how many were imported. They survive a reload while the peer
    /// exists.
    pub fn import_mesh(
        &mut self,
        cfg: &Config,
        peer: &str,
        adverts: &[Advertisement],
    ) -> Result<usize, RoutingError> {
        let nh = mesh_peer(cfg, peer).ok_or_else(|| RoutingError::UnknownPeer(peer.into()))?;
        let h = hop(nh);
        if let Some(old) = self.imported.remove(peer) {
            for a in old {
                self.rib.withdraw(&a.prefix, Source::Mesh, &h);
            }
        }
        let n = self.import_routes(h, adverts.iter().copied());
        self.imported.insert(peer.to_string(), adverts.to_vec());
        self.commit();
        n
    }

    /// Carries the runtime imports of `old` over to this (freshly built) table, for the
    /// peers `cfg` still has.
    pub fn keep_imports(&mut self, cfg: &Config, old: &Routing) {
        for (peer, adverts) in &old.imported {
            if let Err(e) = self.import_mesh(cfg, peer, adverts) {
                tracing::info!(%peer, "mesh routes dropped on reload: {e}");
            }
        }
    }

    /// What this gateway advertises to the mesh: the export policy applied to the RIB's
    /// selected routes, one per prefix, sorted by prefix.
    pub fn advertised(&self) -> Vec<Route> {
        self.export.export(&self.rib, Source::Mesh)
    }

    /// [`advertised`](Self::advertised) as peers receive it.
    pub fn advertisements(&self) -> Vec<Advertisement> {
        self.advertised()
            .into_iter()
            .map(|r| Advertisement {
                prefix: r.prefix,
                metric: r.metric,
                tag: r.tag,
            })
            .collect()
    }

    /// Every candidate route of the RIB, selected or not, for status.
    pub fn status(&self, cfg: &Config) -> Vec<RouteStatus> {
        let mut out = Vec::new();
        for p in &self.prefixes {
            let best = self.rib.best(p);
            for c in self.rib.candidates(p) {
                let r = c.route;
                out.push(RouteStatus {
                    prefix: p.to_string(),
                    via: via_name(cfg, port_nexthop(r.next_hop.port)),
                    source: r.source.as_str().into(),
                    distance: u32::from(r.distance),
                    metric: r.metric,
                    selected: best.contains(&r),
                    enabled: c.enabled,
                });
            }
        }
        out
    }

    /// What this gateway advertises, for status: each route with the source it was exported
    /// from.
    pub fn advert_status(&self) -> Vec<AdvertStatus> {
        self.advertised()
            .into_iter()
            .map(|r| {
                let from = self
                    .rib
                    .best(&r.prefix)
                    .first()
                    .map_or(Source::Mesh, |b| b.source);
                AdvertStatus {
                    prefix: r.prefix.to_string(),
                    from: from.as_str().into(),
                    metric: r.metric,
                    tag: r.tag,
                }
            })
            .collect()
    }
}

/// The name of a next hop as routes write it (`interface:lan0`, `ipsec:site-b`, `gre:gre-b`).
pub fn via_name(cfg: &Config, nh: NextHop) -> String {
    let name = |n: Option<&String>| n.map_or("?", |s| s.as_str()).to_string();
    match nh {
        NextHop::Iface(i) => format!("interface:{}", name(cfg.interface.get(i).map(|x| &x.name))),
        NextHop::Ipsec(p) => format!("ipsec:{}", name(cfg.ipsec.peer.get(p).map(|x| &x.name))),
        NextHop::Gre(g) => format!("gre:{}", name(cfg.gre.get(g).map(|x| &x.name))),
        NextHop::Local => "local".into(),
    }
}

/// A mesh peer by name: an IPsec peer or a GRE tunnel in `ip` mode.
fn mesh_peer(cfg: &Config, name: &str) -> Option<NextHop> {
    if let Some(p) = cfg.ipsec.peer.iter().position(|p| p.name == name) {
        return Some(NextHop::Ipsec(p));
    }
    cfg.gre
        .iter()
        .position(|g| g.name == name && g.mode == config::GreMode::Ip)
        .map(NextHop::Gre)
}

/// The export policy: the prefixes marked `advertise`, each permitted exactly when the
/// operator's prefix list (if any) passes it, from the connected, static and overlay sources
/// into the mesh, with the `[advertise]` metric and tag.
fn export_policy(cfg: &Config, tag: u32) -> Result<Redistributor, RoutingError> {
    let filter = match cfg.advertise.parsed_prefix_list() {
        None => None,
        Some(Ok(pl)) => Some(pl),
        Some(Err(e)) => return Err(RoutingError::PrefixList(e.to_string())),
    };
    let mut marked: Vec<IpNet> = Vec::new();
    for iface in cfg.interface.iter().filter(|i| i.advertise) {
        if let (Some(a), InterfaceKind::Tun) = (iface.address, iface.kind) {
            marked.push(a.trunc());
        }
    }
    marked.extend(cfg.route.iter().filter(|r| r.advertise).map(|r| r.prefix));
    if let Some(o) = cfg.overlay.as_ref().filter(|o| o.advertise) {
        marked.extend(&o.prefixes);
    }
    let mut list = PrefixList::default();
    for p in marked {
        let p = p.trunc();
        let passes = filter.as_ref().is_none_or(|f| f.permits(&p));
        if passes && !list.entries.iter().any(|e| e.prefix == p) {
            let e = PrefixListEntry::new(gatekit_route::Verdict::Permit, p, None, None)
                .map_err(|e| RoutingError::PrefixList(e.to_string()))?;
            list.entries.push(e);
        }
    }
    let mut rule = Redistribution::new(
        &[Source::Connected, Source::Static, Source::Overlay],
        Source::Mesh,
    )
    .prefix_list(list)
    .add_metric(cfg.advertise.add_metric)
    .set_tag(tag);
    if let Some(m) = cfg.advertise.metric {
        rule = rule.set_metric(m);
    }
    Ok(Redistributor::new(vec![rule]))
}
