//! The gateway's data path, sans-IO: packets in from a port, packets out to ports.
//!
//! ```text
//! underlay (whole IP packets) ─► ESP (native / NAT-T) ─► tunnel mode: inner IP ─► firewall ─► route
//!                              │                      └► transport mode: GRE ─┐
//!                              ├► GRE (in clear) ───────────────────────────┤
//!                              └► VXLAN ──────────────────────────────────────┴► switch fabric
//! TUN (IP) ─► firewall ─► route ─► TUN / ESP tunnel / GRE (L3) ─► underlay
//! TAP (Ethernet) ─► switch fabric ─► TAP / GRE-TEB (over ESP transport) / VXLAN ─► underlay
//! ```
//!
//! Every port hands [`Gateway::process`] whole packets: IP packets from TUN devices and from
//! the underlay (a UDP or raw socket port writes the outer headers back, see `gatekit-io`),
//! Ethernet frames from TAP devices. What leaves goes through a [`Sink`].

use crate::config::{self, Config, Encap as CfgEncap, GreMode as CfgGreMode, InterfaceKind};
use crate::filter;
use crate::routing::{self, Routing};
use gatekit_esp as esp;
use gatekit_firewall as fw;
use gatekit_gre as gre;
use gatekit_packet::{
    DropCounters, DropReason, FlowKey, Instant, Meta, PacketBuf, PortId, checksum,
};
use gatekit_switch as switch;
use std::net::IpAddr;
use std::time::Duration;

/// Where a packet came in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Ingress {
    /// The underlay: a whole outer IP packet from a UDP or raw socket.
    Underlay,
    /// A local interface, by index into [`Config::interface`].
    Iface(usize),
}

/// Where a packet goes out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Egress {
    /// The underlay: a whole outer IP packet; the runtime picks the socket by its protocol
    /// (UDP, ESP 50, GRE 47) and reads the destination from its header.
    Underlay,
    /// A local interface, by index into [`Config::interface`].
    Iface(usize),
}

/// What the gateway emits into: the runtime's ports (or the lab's queues).
pub trait Sink<B> {
    /// Sends `buf` out of `to`.
    fn emit(&mut self, to: Egress, buf: B, meta: Meta);
    /// A fresh empty buffer with headroom, for copies (floods) and generated packets
    /// (keepalives); `None` when out of buffers (the gateway counts a drop).
    fn alloc(&mut self) -> Option<B>;
}

/// Where the FIB sends a prefix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NextHop {
    /// Out of a local interface.
    Iface(usize),
    /// Into an IPsec peer: the first of its tunnel-mode SAs whose selectors take the flow.
    Ipsec(usize),
    /// Into a GRE tunnel (L3 mode).
    Gre(usize),
    /// To the gateway itself.
    Local,
}

/// Per-port traffic counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct PortCounters {
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
}

impl PortCounters {
    fn rx(&mut self, n: usize) {
        self.rx_packets += 1;
        self.rx_bytes += n as u64;
    }
    fn tx(&mut self, n: usize) {
        self.tx_packets += 1;
        self.tx_bytes += n as u64;
    }
}

/// An IPsec peer as the data path sees it.
#[derive(Debug)]
pub struct Peer {
    /// Name from the config.
    pub name: String,
    /// Outbound tunnel-mode SAs.
    pub out_tunnel: Vec<esp::SaId>,
    /// Outbound transport-mode SA (for GRE over IPsec), if any.
    pub out_transport: Option<esp::SaId>,
    /// Inbound SAs.
    pub inbound: Vec<esp::SaId>,
}

/// A port of the switch fabric.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum L2Port {
    Tap(usize),
    Gre(usize),
    Vxlan(usize),
}

/// Errors building a gateway from a (validated) config.
#[derive(Debug, thiserror::Error)]
#[non_exhaustive]
pub enum BuildError {
    /// An SA could not be set up.
    #[error("ipsec peer `{peer}`: {source}")]
    Esp {
        /// The peer.
        peer: String,
        /// Why.
        source: esp::ConfigError,
    },
    /// A GRE or VXLAN tunnel could not be set up.
    #[error("tunnel `{name}`: {source}")]
    Tunnel {
        /// The tunnel.
        name: String,
        /// Why.
        source: gre::ConfigError,
    },
    /// A bridge could not be set up.
    #[error("bridge `{name}`: {source}")]
    Bridge {
        /// The bridge.
        name: String,
        /// Why.
        source: switch::ConfigError,
    },
    /// The firewall rules do not load.
    #[error("firewall: {0}")]
    Firewall(String),
    /// The routing table does not build.
    #[error("routing: {0}")]
    Routing(#[from] routing::RoutingError),
}

/// One gateway's data path.
pub struct Gateway {
    cfg: Config,
    local: IpAddr,
    esp: esp::Endpoint,
    peers: Vec<Peer>,
    routing: Routing,
    gre: gre::GreEndpoint,
    gre_ids: Vec<gre::TunnelId>,
    vtep: Option<gre::Vtep>,
    vx_ids: Vec<gre::TunnelId>,
    fabric: switch::Switch,
    sa_fps: Vec<(u64, esp::SaId)>,
    l2: Vec<L2Port>,
    egress: switch::Egress,
    firewall: filter::Filter,
    /// Counters per interface (index as in the config).
    pub iface_counters: Vec<PortCounters>,
    /// Counters of the underlay.
    pub underlay_counters: PortCounters,
    drops: DropCounters,
}

impl std::fmt::Debug for Gateway {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Gateway")
            .field("name", &self.cfg.gateway.name)
            .finish_non_exhaustive()
    }
}

fn suite(s: config::Suite) -> esp::Suite {
    match s {
        config::Suite::Aes128Gcm => esp::Suite::AesGcm128,
        config::Suite::Aes256Gcm => esp::Suite::AesGcm256,
        config::Suite::ChaCha20Poly1305 => esp::Suite::ChaCha20Poly1305,
    }
}

/// An SA the config asks for, with a fingerprint of everything that defines it, so a
/// reload can tell an unchanged SA (kept, with its sequence numbers and replay window)
/// from a changed one.
struct PlannedSa {
    peer: usize,
    transport: bool,
    cfg: esp::SaConfig,
    fp: u64,
}

fn sa_plan(cfg: &Config) -> Result<Vec<PlannedSa>, BuildError> {
    use std::hash::{Hash, Hasher};
    let local = cfg.underlay.address;
    let mut plan = Vec::new();
    for (pi, p) in cfg.ipsec.peer.iter().enumerate() {
        let err = |source| BuildError::Esp {
            peer: p.name.clone(),
            source,
        };
        for t in &p.tunnel {
            let s = suite(t.suite);
            for dir in [esp::Direction::Outbound, esp::Direction::Inbound] {
                let (spi, key) = match dir {
                    esp::Direction::Outbound => (t.spi_out, &t.key_out),
                    esp::Direction::Inbound => (t.spi_in, &t.key_in),
                };
                let key_material = esp::KeyMaterial::from_hex(s, key.get_ref()).map_err(err)?;
                let mut sa = esp::SaConfig::new(spi, dir, s, key_material, local, p.remote);
                sa.mode = match t.mode {
                    config::Mode::Tunnel => esp::Mode::Tunnel,
                    config::Mode::Transport => esp::Mode::Transport,
                };
                sa.encap = match p.encap {
                    CfgEncap::Native => esp::Encap::Native,
                    CfgEncap::Udp => esp::Encap::Udp {
                        local_port: cfg.underlay.natt_port,
                        peer_port: p.remote_port,
                    },
                };
                sa.esn = t.esn;
                sa.replay_window = t.replay_window;
                if t.mode == config::Mode::Tunnel {
                    sa.selectors = t
                        .local_ts
                        .iter()
                        .flat_map(|l| {
                            t.remote_ts
                                .iter()
                                .map(|r| esp::TrafficSelector::new(*l, *r))
                        })
                        .collect();
                }
                if dir == esp::Direction::Outbound && p.encap == CfgEncap::Udp && p.keepalive > 0 {
                    sa.keepalive = Some(Duration::from_secs(p.keepalive));
                }
                let mut h = std::collections::hash_map::DefaultHasher::new();
                (
                    &p.name,
                    p.remote,
                    p.encap,
                    p.remote_port,
                    p.keepalive,
                    local,
                )
                    .hash(&mut h);
                (
                    cfg.underlay.natt_port,
                    spi,
                    dir == esp::Direction::Outbound,
                    key.get_ref(),
                )
                    .hash(&mut h);
                (
                    t.mode,
                    t.suite,
                    &t.local_ts,
                    &t.remote_ts,
                    t.esn,
                    t.replay_window,
                )
                    .hash(&mut h);
                plan.push(PlannedSa {
                    peer: pi,
                    transport: t.mode == config::Mode::Transport,
                    cfg: sa,
                    fp: h.finish(),
                });
            }
        }
    }
    Ok(plan)
}

fn peers_of(cfg: &Config, plan: &[PlannedSa], ids: &[(u64, esp::SaId)]) -> Vec<Peer> {
    let mut peers: Vec<Peer> = cfg
        .ipsec
        .peer
        .iter()
        .map(|p| Peer {
            name: p.name.clone(),
            out_tunnel: Vec::new(),
            out_transport: None,
            inbound: Vec::new(),
        })
        .collect();
    for (p, (_, id)) in plan.iter().zip(ids) {
        let peer = &mut peers[p.peer];
        match (p.cfg.direction, p.transport) {
            (esp::Direction::Inbound, _) => peer.inbound.push(*id),
            (esp::Direction::Outbound, false) => peer.out_tunnel.push(*id),
            (esp::Direction::Outbound, true) => peer.out_transport = Some(*id),
        }
    }
    peers
}

impl Gateway {
    /// Builds the data path of a validated config.
    pub fn new(cfg: Config, now: Instant) -> Result<Gateway, BuildError> {
        let local = cfg.underlay.address;
        let mut esp_cfg = esp::EndpointConfig::default();
        if cfg.underlay.natt_port != 0 && !esp_cfg.nat_t_ports.contains(&cfg.underlay.natt_port) {
            esp_cfg.nat_t_ports.push(cfg.underlay.natt_port);
        }
        let mut endpoint = esp::Endpoint::new(esp_cfg);
        let plan = sa_plan(&cfg)?;
        let mut sa_fps = Vec::with_capacity(plan.len());
        for p in &plan {
            let id = endpoint
                .add_sa(&p.cfg, now)
                .map_err(|source| BuildError::Esp {
                    peer: cfg.ipsec.peer[p.peer].name.clone(),
                    source,
                })?;
            sa_fps.push((p.fp, id));
        }
        let peers = peers_of(&cfg, &plan, &sa_fps);

        let mut gre_ep = gre::GreEndpoint::new();
        let mut gre_ids = Vec::new();
        for g in &cfg.gre {
            let mut t = gre::GreTunnelConfig::new(local, g.remote);
            t.key = g.key;
            t.mode = match g.mode {
                CfgGreMode::Ip => gre::GreMode::L3,
                CfgGreMode::Teb => gre::GreMode::Ethernet,
            };
            t.sequence = g.sequence;
            t.check_sequence = g.sequence;
            t.mtu = usize::from(g.mtu);
            t.mss_clamp = g.mode == CfgGreMode::Ip;
            let id = gre_ep.add_tunnel(t).map_err(|source| BuildError::Tunnel {
                name: g.name.clone(),
                source,
            })?;
            gre_ids.push(id);
        }
        let mut vtep = None;
        let mut vx_ids = Vec::new();
        if !cfg.vxlan.is_empty() {
            let mut vc = gre::VtepConfig::new(local);
            vc.port = cfg.underlay.vxlan_port;
            let mut v = gre::Vtep::new(vc).map_err(|source| BuildError::Tunnel {
                name: "vxlan".into(),
                source,
            })?;
            for x in &cfg.vxlan {
                vx_ids.push(v.add_tunnel(x.remote, x.vni).map_err(|source| {
                    BuildError::Tunnel {
                        name: x.name.clone(),
                        source,
                    }
                })?);
            }
            vtep = Some(v);
        }

        // The fabric: one domain per bridge (its internal VLAN is its index + 1), TAPs as
        // access ports, tunnels as tunnel ports in one split-horizon group so a mesh of
        // sites never loops.
        let mut fabric = switch::Switch::new();
        let mut l2 = Vec::new();
        let mesh = switch::HorizonGroup(1);
        for (bi, b) in cfg.bridge.iter().enumerate() {
            let vlan = u16::try_from(bi + 1).unwrap_or(switch::MAX_VLAN);
            let berr = |source| BuildError::Bridge {
                name: b.name.clone(),
                source,
            };
            let mut dc = switch::DomainConfig::new(vlan);
            dc.aging = Duration::from_secs(b.aging);
            dc.max_macs = u32::try_from(b.max_macs).ok();
            fabric.add_domain(dc).map_err(berr)?;
            for p in &b.ports {
                let name = p.get_ref();
                let port = PortId(u16::try_from(l2.len()).unwrap_or(u16::MAX));
                let (which, pc) =
                    if let Some(i) = cfg.interface.iter().position(|i| &i.name == name) {
                        (L2Port::Tap(i), switch::PortConfig::access(vlan))
                    } else if let Some(i) = cfg.gre.iter().position(|g| &g.name == name) {
                        (
                            L2Port::Gre(i),
                            switch::PortConfig::tunnel(switch::PortKind::GreTeb, vlan, mesh),
                        )
                    } else if let Some(i) = cfg.vxlan.iter().position(|v| &v.name == name) {
                        (
                            L2Port::Vxlan(i),
                            switch::PortConfig::tunnel(switch::PortKind::Vxlan, vlan, mesh),
                        )
                    } else {
                        continue; // validation guarantees this does not happen
                    };
                fabric.set_port(port, pc).map_err(berr)?;
                l2.push(which);
            }
        }

        let routing = Routing::new(&cfg)?;
        let firewall = filter::Filter::new(&cfg).map_err(BuildError::Firewall)?;
        let n_if = cfg.interface.len();
        Ok(Gateway {
            cfg,
            local,
            esp: endpoint,
            peers,
            routing,
            gre: gre_ep,
            gre_ids,
            vtep,
            vx_ids,
            fabric,
            sa_fps,
            l2,
            egress: switch::Egress::with_capacity(64),
            firewall,
            iface_counters: vec![PortCounters::default(); n_if],
            underlay_counters: PortCounters::default(),
            drops: DropCounters::default(),
        })
    }

    /// The config this gateway runs.
    pub fn config(&self) -> &Config {
        &self.cfg
    }
    /// The ESP endpoint (SAs, counters).
    pub fn esp(&self) -> &esp::Endpoint {
        &self.esp
    }
    /// IPsec peers.
    pub fn peers(&self) -> &[Peer] {
        &self.peers
    }
    /// The switch fabric.
    pub fn fabric(&self) -> &switch::Switch {
        &self.fabric
    }
    /// The GRE endpoint.
    pub fn gre(&self) -> &gre::GreEndpoint {
        &self.gre
    }
    /// The firewall.
    pub fn firewall(&self) -> &filter::Filter {
        &self.firewall
    }
    /// The routing table: the RIB, its compiled FIB and the advertisements.
    pub fn routing(&self) -> &Routing {
        &self.routing
    }
    /// The routing table, to withdraw, disable or enable routes and mark next hops down.
    pub fn routing_mut(&mut self) -> &mut Routing {
        &mut self.routing
    }
    /// Replaces the mesh routes learned from `peer` (an IPsec peer or a GRE tunnel in `ip`
    /// mode) with `adverts`; see [`Routing::import_mesh`].
    pub fn import_mesh(
        &mut self,
        peer: &str,
        adverts: &[routing::Advertisement],
    ) -> Result<usize, routing::RoutingError> {
        self.routing.import_mesh(&self.cfg, peer, adverts)
    }
    /// Drops of the gateway's own stages (ESP, GRE, switch and firewall count their own).
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }
    /// All drops of the data path, by reason.
    pub fn all_drops(&self) -> DropCounters {
        let mut d = self.drops.clone();
        d.merge(self.esp.drops());
        d.merge(self.gre.drops());
        d.merge(self.fabric.drops());
        if let Some(v) = &self.vtep {
            d.merge(v.drops());
        }
        d.merge(self.firewall.drops());
        d
    }
    /// The switch port names, for status.
    pub fn l2_port_name(&self, port: PortId) -> String {
        match self.l2.get(usize::from(port.0)) {
            Some(L2Port::Tap(i)) => self.cfg.interface[*i].name.clone(),
            Some(L2Port::Gre(i)) => self.cfg.gre[*i].name.clone(),
            Some(L2Port::Vxlan(i)) => self.cfg.vxlan[*i].name.clone(),
            None => format!("port{}", port.0),
        }
    }

    fn drop(&mut self, r: DropReason) {
        self.drops.add(r, 1);
    }

    /// Processes one packet that arrived on `from`.
    pub fn process<B: PacketBuf, S: Sink<B>>(
        &mut self,
        from: Ingress,
        buf: B,
        meta: Meta,
        now: Instant,
        sink: &mut S,
    ) {
        match from {
            Ingress::Underlay => {
                self.underlay_counters.rx(buf.len());
                self.underlay_in(buf, meta, now, sink);
            }
            Ingress::Iface(i) => {
                let Some(iface) = self.cfg.interface.get(i) else {
                    return self.drop(DropReason::PortDown);
                };
                self.iface_counters[i].rx(buf.len());
                match iface.kind {
                    InterfaceKind::Tun => {
                        self.route_ip(Some(PortId(i as u16)), buf, meta, now, sink);
                    }
                    InterfaceKind::Tap => match self.l2.iter().position(|p| *p == L2Port::Tap(i)) {
                        Some(port) => self.switch(port, buf, meta, now, sink),
                        None => self.drop(DropReason::PortDown),
                    },
                }
            }
        }
    }

    fn underlay_in<B: PacketBuf, S: Sink<B>>(
        &mut self,
        mut buf: B,
        mut meta: Meta,
        now: Instant,
        sink: &mut S,
    ) {
        let Some(outer) = outer_info(buf.data()) else {
            return self.drop(DropReason::Malformed);
        };
        let (proto, dport) = (outer.proto, outer.dport);
        let is_natt = proto == 17 && dport == self.cfg.underlay.natt_port && dport != 0;
        let is_vxlan = proto == 17 && dport == self.cfg.underlay.vxlan_port && self.vtep.is_some();
        if proto == 50 || is_natt {
            match self.esp.decap_ip(&mut buf, now) {
                esp::Decap::Inner(d) => {
                    let peer = self.peers.iter().position(|p| p.inbound.contains(&d.sa));
                    if let Some(pi) = peer
                        && is_natt
                    {
                        self.follow_peer(pi, outer.src, outer.sport, now);
                    }
                    match d.mode {
                        esp::Mode::Tunnel => {
                            meta.clear_offsets();
                            self.route_ip(peer.map(filter::peer_port), buf, meta, now, sink);
                        }
                        esp::Mode::Transport => {
                            if d.next_header == 47 {
                                self.gre_in(buf, meta, now, sink, true);
                            } else {
                                self.drop(DropReason::UnknownNextHeader);
                            }
                        }
                    }
                }
                // IKE is not served yet (static keys); NAT keepalives and dummies are counted
                // by the endpoint.
                esp::Decap::Ike => self.drop(DropReason::Unsupported),
                esp::Decap::Dummy(_) | esp::Decap::Keepalive | esp::Decap::Drop(_) => {}
            }
        } else if proto == 47 {
            self.gre_in(buf, meta, now, sink, false);
        } else if is_vxlan {
            let Some(vtep) = self.vtep.as_mut() else {
                return self.drop(DropReason::Unsupported);
            };
            if let gre::Decap::Packet { tunnel, .. } = vtep.decap(&mut buf) {
                match self
                    .vx_ids
                    .iter()
                    .position(|t| *t == tunnel)
                    .and_then(|i| self.l2.iter().position(|p| *p == L2Port::Vxlan(i)))
                {
                    Some(port) => self.switch(port, buf, meta, now, sink),
                    None => self.drop(DropReason::UnknownTunnel),
                }
            }
        } else {
            self.drop(DropReason::Unsupported);
        }
    }

    fn gre_in<B: PacketBuf, S: Sink<B>>(
        &mut self,
        mut buf: B,
        meta: Meta,
        now: Instant,
        sink: &mut S,
        protected: bool,
    ) {
        match self.gre.decap(&mut buf) {
            gre::Decap::Packet { tunnel, protocol } => {
                let Some(gi) = self.gre_ids.iter().position(|t| *t == tunnel) else {
                    return self.drop(DropReason::UnknownTunnel);
                };
                // A tunnel configured over IPsec accepts nothing in clear: that would let
                // anyone inject frames into the bridge by spoofing the peer's address.
                if self.cfg.gre[gi].over_ipsec.is_some() && !protected {
                    return self.drop(DropReason::Filtered);
                }
                if protocol == gre::protocol::TEB {
                    match self.l2.iter().position(|p| *p == L2Port::Gre(gi)) {
                        Some(port) => self.switch(port, buf, meta, now, sink),
                        None => self.drop(DropReason::UnknownTunnel),
                    }
                } else {
                    let mut meta = meta;
                    meta.clear_offsets();
                    self.route_ip(Some(filter::gre_port(gi)), buf, meta, now, sink);
                }
            }
            gre::Decap::Reflect { .. } => self.send_underlay(buf, meta, sink),
            gre::Decap::Keepalive { .. } | gre::Decap::Drop(_) => {}
        }
    }

    /// Switches a frame received on fabric port `port`.
    fn switch<B: PacketBuf, S: Sink<B>>(
        &mut self,
        port: usize,
        mut buf: B,
        meta: Meta,
        now: Instant,
        sink: &mut S,
    ) {
        let ingress = PortId(u16::try_from(port).unwrap_or(u16::MAX));
        let verdict = self
            .fabric
            .forward(ingress, buf.data_mut(), now, &mut self.egress);
        if let switch::Verdict::Drop(_) = verdict {
            return; // counted by the fabric
        }
        let n = self.egress.len();
        let mut ports = [switch::EgressPort {
            port: PortId(0),
            tag: None,
        }; 64];
        let n = n.min(ports.len());
        ports[..n].copy_from_slice(&self.egress.ports()[..n]);
        // Copies for all but the last egress port; the last takes the original buffer.
        let mut original = Some(buf);
        for (k, e) in ports[..n].iter().enumerate() {
            let out = if k + 1 == n {
                original.take()
            } else {
                let Some(src) = original.as_ref() else { break };
                copy_into(src.data(), sink)
            };
            let Some(mut out) = out else {
                self.drop(DropReason::NoBuffer);
                continue;
            };
            if switch::retag(&mut out, e.tag).is_err() {
                self.drop(DropReason::NoRoom);
                continue;
            }
            match self.l2.get(usize::from(e.port.0)).copied() {
                Some(L2Port::Tap(i)) => {
                    self.iface_counters[i].tx(out.len());
                    sink.emit(Egress::Iface(i), out, meta);
                }
                Some(L2Port::Gre(gi)) => self.gre_out(gi, out, meta, now, sink),
                Some(L2Port::Vxlan(vi)) => {
                    let Some(vtep) = self.vtep.as_mut() else {
                        continue;
                    };
                    if let gre::Encap::Ready = vtep.encap(self.vx_ids[vi], &mut out) {
                        self.send_underlay(out, meta, sink);
                    }
                }
                None => self.drop(DropReason::PortDown),
            }
        }
    }

    /// Encapsulates into GRE tunnel `gi` (and its IPsec SA when configured) and sends.
    fn gre_out<B: PacketBuf, S: Sink<B>>(
        &mut self,
        gi: usize,
        mut buf: B,
        meta: Meta,
        now: Instant,
        sink: &mut S,
    ) {
        match self.gre.encap(self.gre_ids[gi], &mut buf) {
            gre::Encap::Ready => {}
            gre::Encap::IcmpError => return self.route_generated(buf, meta, now, sink),
            gre::Encap::Drop(_) => return,
        }
        if let Some(peer) = &self.cfg.gre[gi].over_ipsec {
            let sa = self
                .peers
                .iter()
                .find(|p| &p.name == peer.get_ref())
                .and_then(|p| p.out_transport);
            let Some(sa) = sa else {
                return self.drop(DropReason::NoSa);
            };
            if self
                .esp
                .encap(esp::Select::Sa(sa), &mut buf, esp::Output::Packet, now)
                .is_err()
            {
                return; // counted by the endpoint
            }
        }
        self.send_underlay(buf, meta, sink);
    }

    fn send_underlay<B: PacketBuf, S: Sink<B>>(&mut self, buf: B, meta: Meta, sink: &mut S) {
        self.underlay_counters.tx(buf.len());
        sink.emit(Egress::Underlay, buf, meta);
    }

    /// An ICMP error the GRE tunnel generated goes back towards the sender by the FIB.
    fn route_generated<B: PacketBuf, S: Sink<B>>(
        &mut self,
        buf: B,
        meta: Meta,
        now: Instant,
        sink: &mut S,
    ) {
        self.route_ip(None, buf, meta, now, sink);
    }

    /// Filters and routes an IP packet that arrived from firewall port `from` (`None` for
    /// packets the gateway generated).
    fn route_ip<B: PacketBuf, S: Sink<B>>(
        &mut self,
        from: Option<PortId>,
        mut buf: B,
        mut meta: Meta,
        now: Instant,
        sink: &mut S,
    ) {
        if !meta.parse_ip(buf.data()) {
            return self.drop(DropReason::Malformed);
        }
        let Some(dst) = dst_addr(buf.data()) else {
            return self.drop(DropReason::Malformed);
        };
        let hash = self.flow_hash(buf.data(), &meta);
        let nh = if let Some(engine) = self.firewall.engine_mut() {
            // The firewall runs conntrack, nat and filter around our routing decision, and
            // may rewrite the packet (DNAT/SNAT, IPv4 only) in place. IPv6 is filtered and
            // tracked the same way, without NAT.
            let routing = &self.routing;
            let mut router = |d: IpAddr| match routing.lookup(d, hash) {
                Some(NextHop::Local) => fw::Route::Local,
                Some(nh) => fw::Route::Out(routing::nexthop_port(nh)),
                None => fw::Route::Unreachable,
            };
            let source = from.map_or(fw::Source::Local, fw::Source::Port);
            match engine.process(&mut buf, &mut meta, source, &mut router, now) {
                fw::Verdict::Accept(fw::Route::Out(p)) => routing::port_nexthop(p),
                fw::Verdict::Accept(fw::Route::Local) => NextHop::Local,
                fw::Verdict::Accept(fw::Route::Unreachable) => {
                    return self.drop(DropReason::NoRoute);
                }
                fw::Verdict::Drop(_) => return, // counted by the firewall
                fw::Verdict::Reject => {
                    // The buffer holds the ICMP error or TCP RST for the sender.
                    meta.clear_offsets();
                    return self.route_local(buf, meta, now, sink);
                }
            }
        } else {
            match self.routing.lookup(dst, hash) {
                Some(nh) => nh,
                None => return self.drop(DropReason::NoRoute),
            }
        };
        if nh == NextHop::Local {
            if answer_echo(&mut buf) {
                // Our own answer goes back by the FIB like any locally generated packet.
                meta.clear_offsets();
                return self.route_local(buf, meta, now, sink);
            }
            return self.drop(DropReason::Unsupported);
        }
        if !decrement_ttl(&mut buf) {
            return self.drop(DropReason::TtlExceeded);
        }
        self.send_ip(nh, buf, meta, now, sink);
    }

    /// Routes a packet the gateway generated (an echo reply, an ICMP error): FIB, then out.
    fn route_local<B: PacketBuf, S: Sink<B>>(
        &mut self,
        buf: B,
        meta: Meta,
        now: Instant,
        sink: &mut S,
    ) {
        let Some(dst) = dst_addr(buf.data()) else {
            return self.drop(DropReason::Malformed);
        };
        let hash = self.flow_hash(buf.data(), &meta);
        match self.routing.lookup(dst, hash) {
            Some(NextHop::Local) | None => self.drop(DropReason::NoRoute),
            Some(nh) => self.send_ip(nh, buf, meta, now, sink),
        }
    }

    /// The flow hash that picks among equal-cost paths; computed only when some prefix has
    /// several, so single-path forwarding never parses the transport header for it.
    #[inline]
    fn flow_hash(&self, packet: &[u8], meta: &Meta) -> u32 {
        if !self.routing.needs_flow_hash() {
            return 0;
        }
        if meta.flow_hash != 0 {
            return meta.flow_hash;
        }
        FlowKey::from_ip(packet).map_or(0, |k| k.hash(false))
    }

    fn send_ip<B: PacketBuf, S: Sink<B>>(
        &mut self,
        nh: NextHop,
        mut buf: B,
        meta: Meta,
        now: Instant,
        sink: &mut S,
    ) {
        match nh {
            NextHop::Iface(i) => {
                let mtu = usize::from(self.cfg.interface[i].mtu);
                if buf.len() > mtu {
                    return self.drop(DropReason::TooBig);
                }
                self.iface_counters[i].tx(buf.len());
                sink.emit(Egress::Iface(i), buf, meta);
            }
            NextHop::Ipsec(p) => {
                // The route chose the peer; of its SAs, the first whose selectors take the
                // flow seals it. A flow no SA of the peer agrees to is dropped here, as the
                // peer's inbound selector check would drop it.
                let Ok(key) = FlowKey::from_ip(buf.data()) else {
                    return self.drop(DropReason::Malformed);
                };
                let sa = self
                    .peers
                    .get(p)
                    .and_then(|peer| self.esp.lookup_policy_among(&peer.out_tunnel, &key));
                let Some(sa) = sa else {
                    return self.drop(DropReason::NoSa);
                };
                // Failures (an expired SA, a packet too big) are counted by the endpoint.
                if self
                    .esp
                    .encap(esp::Select::Sa(sa), &mut buf, esp::Output::Packet, now)
                    .is_ok()
                {
                    self.send_underlay(buf, meta, sink);
                }
            }
            NextHop::Gre(g) => self.gre_out(g, buf, meta, now, sink),
            NextHop::Local => self.drop(DropReason::NoRoute),
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due.
    pub fn poll_timeout(&self) -> Option<Instant> {
        [
            self.esp.poll_timeout(),
            self.gre.poll_timeout(),
            self.fabric.poll_timeout(),
            self.firewall.poll_timeout(),
        ]
        .into_iter()
        .flatten()
        .min()
    }

    /// Runs timers due at `now`: SA lifetimes and NAT-T keepalives, GRE keepalives, MAC
    /// aging, connection expiry.
    pub fn handle_timeout<B: PacketBuf, S: Sink<B>>(&mut self, now: Instant, sink: &mut S) {
        self.esp.handle_timeout(now);
        while let Some(ka) = self.esp.poll_keepalive() {
            let Some(mut buf) = sink.alloc() else {
                self.drop(DropReason::NoBuffer);
                continue;
            };
            if self
                .esp
                .write_keepalive(&ka, &mut buf, esp::Output::Packet)
                .is_ok()
            {
                self.send_underlay(buf, Meta::new(PortId(0), now), sink);
            }
        }
        while self.esp.poll_event().is_some() {}
        self.gre.handle_timeout(now);
        loop {
            let Some(mut buf) = sink.alloc() else { break };
            if self.gre.poll_keepalive(&mut buf).is_none() {
                break;
            }
            self.send_underlay(buf, Meta::new(PortId(0), now), sink);
        }
        self.fabric.handle_timeout(now);
        while self.fabric.poll_event().is_some() {}
        self.firewall.handle_timeout(now);
    }

    /// The underlay address.
    pub fn local(&self) -> IpAddr {
        self.local
    }

    /// NAT traversal: when an authenticated packet of a peer arrives from another address or
    /// port than its outbound SAs send to (its NAT picked another mapping, or changed it),
    /// the outbound SAs follow (RFC 3948 §3.2; IKEv2 does the same, RFC 7296 §2.23). The
    /// SAs are replaced in one step, keeping their sequence numbers.
    fn follow_peer(&mut self, pi: usize, src: IpAddr, sport: u16, now: Instant) {
        // Called for every authenticated NAT-T packet: the common case (nothing moved) must
        // not allocate.
        let peer = &self.peers[pi];
        let moved = peer.out_tunnel.iter().chain(&peer.out_transport).any(|id| {
            self.esp.sa(*id).is_some_and(|sa| match sa.encap() {
                esp::Encap::Udp { peer_port, .. } => sa.peer() != src || peer_port != sport,
                esp::Encap::Native => false,
            })
        });
        if !moved {
            return;
        }
        let outs: Vec<esp::SaId> = peer
            .out_tunnel
            .iter()
            .chain(&peer.out_transport)
            .copied()
            .collect();
        let Ok(plan) = sa_plan(&self.cfg) else { return };
        for id in outs {
            let Some(sa) = self.esp.sa(id) else { continue };
            let seq = sa.seq();
            let Some(fp) = self
                .sa_fps
                .iter()
                .find(|(_, i)| *i == id)
                .map(|(fp, _)| *fp)
            else {
                continue;
            };
            let Some(p) = plan.iter().find(|p| p.fp == fp) else {
                continue;
            };
            let mut cfg = p.cfg.clone();
            cfg.peer = src;
            if let esp::Encap::Udp { local_port, .. } = cfg.encap {
                cfg.encap = esp::Encap::Udp {
                    local_port,
                    peer_port: sport,
                };
            }
            cfg.seq_start = seq;
            match self.esp.rekey_outbound(id, &cfg, now) {
                Ok(new_id) => {
                    for (_, i) in self.sa_fps.iter_mut().filter(|(_, i)| *i == id) {
                        *i = new_id;
                    }
                    let peer = &mut self.peers[pi];
                    for i in peer.out_tunnel.iter_mut().filter(|i| **i == id) {
                        *i = new_id;
                    }
                    if peer.out_transport == Some(id) {
                        peer.out_transport = Some(new_id);
                    }
                }
                Err(e) => {
                    tracing::warn!(peer = %self.peers[pi].name, "cannot follow the peer: {e}")
                }
            }
        }
        tracing::info!(peer = %self.peers[pi].name, "peer now at {src}:{sport} (NAT mapping)");
    }

    /// Applies a new config atomically, keeping what did not change: unchanged SAs keep
    /// their sequence numbers and replay windows, the firewall keeps its flows and NAT
    /// bindings, the fabric keeps its MAC table when the bridges and tunnels are the same.
    /// A config that does not build changes nothing. Interfaces are devices the runtime
    /// owns: changing them needs a restart, and such a config is refused.
    pub fn reconfigure(&mut self, cfg: Config, now: Instant) -> Result<String, String> {
        let same_ifaces = cfg.interface.len() == self.cfg.interface.len()
            && cfg.interface.iter().zip(&self.cfg.interface).all(|(a, b)| {
                a.name == b.name && a.kind == b.kind && a.address == b.address && a.mtu == b.mtu
            });
        if !same_ifaces || cfg.underlay != self.cfg.underlay {
            return Err("interfaces or underlay changed: restart the gateway to apply them".into());
        }
        // Build everything first: any error leaves the running gateway untouched.
        let mut fresh = Gateway::new(cfg.clone(), now).map_err(|e| e.to_string())?;
        let plan = sa_plan(&cfg).map_err(|e| e.to_string())?;
        let mut firewall_msg = String::new();
        {
            // Dry-run the firewall reload on a scratch copy of the decision: Filter::reload
            // validates before it swaps.
            let msg = self.firewall.reload(&cfg)?;
            firewall_msg.push_str(&msg);
        }
        let (mut kept, mut added, mut removed) = (0, 0, 0);
        let wanted: std::collections::HashSet<u64> = plan.iter().map(|p| p.fp).collect();
        let mut old: std::collections::HashMap<u64, esp::SaId> = std::collections::HashMap::new();
        for (fp, id) in self.sa_fps.drain(..) {
            if wanted.contains(&fp) {
                old.insert(fp, id);
            } else if self.esp.remove_sa(id).is_ok() {
                removed += 1;
            }
        }
        let mut ids = Vec::with_capacity(plan.len());
        for p in &plan {
            let id = match old.remove(&p.fp) {
                Some(id) => {
                    kept += 1;
                    id
                }
                None => {
                    added += 1;
                    self.esp.add_sa(&p.cfg, now).map_err(|e| e.to_string())?
                }
            };
            ids.push((p.fp, id));
        }
        self.peers = peers_of(&cfg, &plan, &ids);
        self.sa_fps = ids;
        let same_l2 =
            cfg.gre == self.cfg.gre && cfg.vxlan == self.cfg.vxlan && cfg.bridge == self.cfg.bridge;
        if !same_l2 {
            std::mem::swap(&mut self.gre, &mut fresh.gre);
            std::mem::swap(&mut self.gre_ids, &mut fresh.gre_ids);
            std::mem::swap(&mut self.vtep, &mut fresh.vtep);
            std::mem::swap(&mut self.vx_ids, &mut fresh.vx_ids);
            std::mem::swap(&mut self.fabric, &mut fresh.fabric);
            std::mem::swap(&mut self.l2, &mut fresh.l2);
        }
        // Mesh routes learned at run time stay, for the peers the new config still has.
        fresh.routing.keep_imports(&cfg, &self.routing);
        std::mem::swap(&mut self.routing, &mut fresh.routing);
        self.cfg = cfg;
        Ok(format!(
            "SAs: {kept} kept, {added} added, {removed} removed; {firewall_msg}; {} prefixes routed; bridges and tunnels {}",
            self.routing.rib().len(),
            if same_l2 {
                "unchanged (MAC tables kept)"
            } else {
                "rebuilt"
            }
        ))
    }

    /// A status snapshot of the data path (interfaces, SAs, routes, MACs, conntrack, rules,
    /// drops). The runtime adds uptime, generation and socket ports.
    pub fn snapshot(&self, now: Instant) -> crate::status::Snapshot {
        use crate::status::*;
        let mut s = Snapshot {
            name: self.cfg.gateway.name.clone(),
            ..Snapshot::default()
        };
        for (i, iface) in self.cfg.interface.iter().enumerate() {
            let c = self.iface_counters[i];
            s.interfaces.push(InterfaceStatus {
                name: iface.name.clone(),
                kind: format!("{:?}", iface.kind).to_lowercase(),
                rx_packets: c.rx_packets,
                rx_bytes: c.rx_bytes,
                tx_packets: c.tx_packets,
                tx_bytes: c.tx_bytes,
                drops: 0,
            });
        }
        for (id, sa) in self.esp.iter() {
            let peer = self
                .peers
                .iter()
                .find(|p| {
                    p.inbound.contains(&id)
                        || p.out_tunnel.contains(&id)
                        || p.out_transport == Some(id)
                })
                .map_or_else(String::new, |p| p.name.clone());
            s.sas.push(SaStatus {
                peer,
                spi: sa.spi(),
                direction: match sa.direction() {
                    esp::Direction::Inbound => "in".into(),
                    esp::Direction::Outbound => "out".into(),
                },
                mode: format!("{:?}", sa.mode()).to_lowercase(),
                suite: match sa.suite() {
                    esp::Suite::AesGcm128 => "aes128gcm16".into(),
                    esp::Suite::AesGcm256 => "aes256gcm16".into(),
                    esp::Suite::ChaCha20Poly1305 => "chacha20poly1305".into(),
                    #[allow(unreachable_patterns)]
                    _ => "other".into(),
                },
                encap: match sa.encap() {
                    esp::Encap::Native => "native".into(),
                    esp::Encap::Udp {
                        local_port,
                        peer_port,
                    } => format!("udp:{local_port}->{}:{peer_port}", sa.peer()),
                },
                packets: sa.stats().packets,
                bytes: sa.stats().bytes,
                drops: sa
                    .stats()
                    .drops
                    .iter()
                    .map(|(r, n)| (r.as_str().to_string(), n))
                    .collect(),
                state: format!("{:?}", sa.state()).to_lowercase(),
            });
        }
        s.routes = self.routing.status(&self.cfg);
        s.advertised = self.routing.advert_status();
        s.advertise_tag = self.routing.tag();
        if let Some(fw) = self.firewall.engine() {
            let st = fw.stats();
            s.firewall = crate::status::FirewallCounters {
                packets: st.packets,
                accepted: st.accepted,
                rejected: st.rejected,
                translated: st.translated,
                fast_path: st.fast_path,
            };
            s.conntrack_total = fw.conntrack().len() as u64;
            for (_, c) in fw.conntrack().iter().take(1000) {
                s.conntrack.push(ConnStatus {
                    proto: c.original.proto.to_string(),
                    src: format!(
                        "{}:{}",
                        std::net::Ipv4Addr::from(c.original.src),
                        c.original.sport
                    ),
                    dst: format!(
                        "{}:{}",
                        std::net::Ipv4Addr::from(c.original.dst),
                        c.original.dport
                    ),
                    state: format!("{:?}", c.proto).to_lowercase(),
                    nat: (c.src_nat() || c.dst_nat()).then(|| {
                        let r = c.reply;
                        format!(
                            "reply {}:{} -> {}:{}",
                            std::net::Ipv4Addr::from(r.src),
                            r.sport,
                            std::net::Ipv4Addr::from(r.dst),
                            r.dport
                        )
                    }),
                    expires_secs: c.expires.saturating_since(now).as_secs(),
                    packets: c.packets[0] + c.packets[1],
                });
            }
            for (i, text) in self.firewall.rules().iter().enumerate() {
                let chain = text.split_whitespace().next().unwrap_or("").to_string();
                let c = self.firewall.rule_counter(i);
                s.firewall_rules.push(RuleStatus {
                    chain,
                    index: i,
                    text: text.clone(),
                    packets: c[0],
                    bytes: c[1],
                });
            }
        }
        s.macs = self.mac_table(now);
        for (r, n) in self.all_drops().iter() {
            s.drops.insert(r.as_str().to_string(), n);
        }
        s
    }

    fn mac_table(&self, now: Instant) -> Vec<crate::status::MacStatus> {
        let secs = u32::try_from(now.as_secs()).unwrap_or(u32::MAX);
        let mut v: Vec<crate::status::MacStatus> = self
            .fabric
            .entries()
            .map(|(vlan, mac, e)| {
                let bridge = usize::from(vlan)
                    .checked_sub(1)
                    .and_then(|i| self.cfg.bridge.get(i))
                    .map_or_else(|| format!("vlan{vlan}"), |b| b.name.clone());
                crate::status::MacStatus {
                    bridge,
                    mac: mac.to_string(),
                    port: self.l2_port_name(e.port),
                    vlan: None,
                    age_secs: u64::from(secs.saturating_sub(e.last_seen_secs)),
                    is_static: e.kind == switch::EntryKind::Static,
                }
            })
            .collect();
        v.sort_by(|a, b| (&a.bridge, &a.mac).cmp(&(&b.bridge, &b.mac)));
        v
    }
}

fn copy_into<B: PacketBuf, S: Sink<B>>(data: &[u8], sink: &mut S) -> Option<B> {
    let mut b = sink.alloc()?;
    b.push_back(data.len()).ok()?.copy_from_slice(data);
    Some(b)
}

/// Protocol and destination port (UDP) of an outer IP packet.
fn outer_info(p: &[u8]) -> Option<Outer> {
    // Plain IPv4 (every NAT-T and native ESP packet over IPv4) from the fixed header.
    if let Some(ip) = gatekit_packet::PlainIpv4::parse(p) {
        let proto = ip.proto();
        let (sport, dport) = match p.get(ip.header_len()..ip.total_len()) {
            Some([s0, s1, d0, d1, ..]) if proto == 17 => (
                u16::from_be_bytes([*s0, *s1]),
                u16::from_be_bytes([*d0, *d1]),
            ),
            _ => (0, 0),
        };
        return Some(Outer {
            proto,
            src: ip.src().into(),
            sport,
            dport,
        });
    }
    let ip = etherparse::IpSlice::from_slice(p).ok()?;
    let proto = ip.payload_ip_number().0;
    let pl = ip.payload().payload;
    let (sport, dport) = if proto == 17 && pl.len() >= 4 {
        (
            u16::from_be_bytes([pl[0], pl[1]]),
            u16::from_be_bytes([pl[2], pl[3]]),
        )
    } else {
        (0, 0)
    };
    Some(Outer {
        proto,
        src: ip.source_addr(),
        sport,
        dport,
    })
}

/// What the data path needs of an outer header before decapsulation changes the buffer.
struct Outer {
    proto: u8,
    src: IpAddr,
    sport: u16,
    dport: u16,
}

fn dst_addr(p: &[u8]) -> Option<IpAddr> {
    match p.first()? >> 4 {
        4 if p.len() >= 20 => Some(IpAddr::from([p[16], p[17], p[18], p[19]])),
        6 if p.len() >= 40 => {
            let mut a = [0u8; 16];
            a.copy_from_slice(&p[24..40]);
            Some(IpAddr::from(a))
        }
        _ => None,
    }
}

/// Decrements the TTL / hop limit; false if it would reach zero. The IPv4 header checksum
/// is fixed incrementally (RFC 1624).
fn decrement_ttl<B: PacketBuf>(buf: &mut B) -> bool {
    let d = buf.data_mut();
    match d.first().map(|b| b >> 4) {
        Some(4) if d.len() >= 20 => {
            if d[8] <= 1 {
                return false;
            }
            let old = u16::from_be_bytes([d[8], d[9]]);
            d[8] -= 1;
            let new = u16::from_be_bytes([d[8], d[9]]);
            let c = u16::from_be_bytes([d[10], d[11]]);
            d[10..12].copy_from_slice(&checksum::update16(c, old, new).to_be_bytes());
            true
        }
        Some(6) if d.len() >= 40 => {
            if d[7] <= 1 {
                return false;
            }
            d[7] -= 1;
            true
        }
        _ => false,
    }
}

/// Turns an ICMPv4 echo request to us into its reply, in place. False for anything else.
fn answer_echo<B: PacketBuf>(buf: &mut B) -> bool {
    let d = buf.data_mut();
    if d.len() < 28 || d[0] >> 4 != 4 || d[9] != 1 {
        return false;
    }
    let ihl = usize::from(d[0] & 0x0f) * 4;
    if d.len() < ihl + 8 || d[ihl] != 8 || d[ihl + 1] != 0 {
        return false;
    }
    // Swap the addresses (the IP checksum is unchanged by a swap), type 8 → 0.
    for i in 0..4 {
        d.swap(12 + i, 16 + i);
    }
    d[8] = 64;
    d[10] = 0;
    d[11] = 0;
    let c = checksum::internet(&d[..ihl]);
    d[10..12].copy_from_slice(&c.to_be_bytes());
    let old = u16::from_be_bytes([d[ihl], d[ihl + 1]]);
    d[ihl] = 0;
    let ic = u16::from_be_bytes([d[ihl + 2], d[ihl + 3]]);
    d[ihl + 2..ihl + 4].copy_from_slice(&checksum::update16(ic, old, 0).to_be_bytes());
    true
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatekit_packet::PktBuf;

    /// Collects what the gateway emits.
    struct Out(Vec<(Egress, PktBuf)>);

    impl Sink<PktBuf> for Out {
        fn emit(&mut self, to: Egress, buf: PktBuf, _meta: Meta) {
            self.0.push((to, buf));
        }
        fn alloc(&mut self) -> Option<PktBuf> {
            Some(PktBuf::new(2048, 192))
        }
    }

    /// With firewall rules loaded, IPv6 is routed through the firewall like IPv4: forwarded
    /// when the rules allow it, dropped (and counted) by an IPv6 rule or set.
    #[test]
    fn ipv6_is_filtered_and_forwarded() {
        let cfg = Config::parse(
            "v6.toml",
            r#"
[gateway]
name = "v6"

[underlay]
address = "192.0.2.1"

[[interface]]
name = "lan0"
kind = "tun"
address = "2001:db8:1::1/64"

[[interface]]
name = "lan1"
kind = "tun"
address = "2001:db8:2::1/64"

[[firewall.set]]
name = "blocked"
addresses = ["2001:db8:2::99/128"]

[firewall]
rules = """
FORWARD_CUST -d 2001:db8:2::66 -p udp -j DROP
FORWARD_CUST -m set --match-set blocked dst -j DROP
FORWARD_CUST -s 10.0.0.0/8 -j DROP
"""
"#,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        let mut gw = Gateway::new(cfg, Instant::ZERO).unwrap_or_else(|e| panic!("{e}"));
        let send = |gw: &mut Gateway, dst: &str| {
            let dst: std::net::Ipv6Addr = dst.parse().unwrap();
            let mut bytes = Vec::new();
            etherparse::PacketBuilder::ipv6(
                "2001:db8:1::5"
                    .parse::<std::net::Ipv6Addr>()
                    .unwrap()
                    .octets(),
                dst.octets(),
                64,
            )
            .udp(5000, 53)
            .write(&mut bytes, b"query")
            .unwrap();
            let mut out = Out(Vec::new());
            let buf = PktBuf::from_slice(&bytes, 192, 256);
            let now = Instant::from_secs(1);
            gw.process(
                Ingress::Iface(0),
                buf,
                Meta::new(PortId(0), now),
                now,
                &mut out,
            );
            (out.0, bytes)
        };
        let (out, sent) = send(&mut gw, "2001:db8:2::5");
        assert_eq!(out.len(), 1, "forwarded");
        assert_eq!(out[0].0, Egress::Iface(1));
        // Addresses and payload as sent (byte 7, the hop limit, is the router's business).
        assert_eq!(out[0].1.data()[8..], sent[8..]);
        let engine = gw.firewall().engine().unwrap();
        assert_eq!(engine.conntrack6().len(), 1, "tracked");
        for dst in ["2001:db8:2::66", "2001:db8:2::99"] {
            let (out, _) = send(&mut gw, dst);
            assert!(out.is_empty(), "{dst} dropped");
        }
        let drops = gw.firewall().drops().get(DropReason::Filtered);
        assert_eq!(drops, 2);
    }
}
