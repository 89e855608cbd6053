//! The gateway's configuration: a typed TOML file, checked like a compiler checks code.
//!
//! Every error names the file, the line and column, the key (`ipsec.peer[0].tunnel[1].spi_in`)
//! and what was expected. Unknown keys are errors. [`Config::load`] reads and validates;
//! [`Config::parse`] does the same on a string.
//!
//! ```
//! let cfg = gatekit_gateway::config::Config::parse("site.toml", r#"
//!     [gateway]
//!     name = "site-a"
//!
//!     [underlay]
//!     address = "192.0.2.1"
//!
//!     [[interface]]
//!     name = "lan0"
//!     kind = "tun"
//!     address = "10.1.0.1/24"
//! "#).unwrap();
//! assert_eq!(cfg.interface[0].name, "lan0");
//! ```

use ipnet::IpNet;
use serde::{Deserialize, Serialize};
use std::collections::BTreeSet;
use std::net::{IpAddr, SocketAddr};
use std::path::{Path, PathBuf};
use toml::Spanned;

#[cfg(test)]
mod overlay_tests;
mod span;
#[cfg(test)]
mod tests;
mod validate;

use span::{at, find_line, toml_err};

/// A configuration error with its place in the file.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}:{column}: {key}: {message}")]
pub struct ConfigError {
    /// The file (as given).
    pub file: String,
    /// 1-based line, 0 when the error concerns the whole file.
    pub line: usize,
    /// 1-based column, 0 when unknown.
    pub column: usize,
    /// The key path, e.g. `ipsec.peer[0].tunnel[1].spi_in`, or `-` for the whole file.
    pub key: String,
    /// What is wrong and what was expected.
    pub message: String,
}

/// The whole configuration of one gateway.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Identity, logging and control endpoints.
    #[serde(default)]
    pub gateway: GatewaySection,
    /// The gateway's address on the underlay network and which protocols it serves there.
    #[serde(default)]
    pub underlay: Underlay,
    /// Local interfaces (TUN for routed site networks, TAP for bridged ones).
    #[serde(default)]
    pub interface: Vec<Interface>,
    /// Static routes.
    #[serde(default)]
    pub route: Vec<Route>,
    /// IPsec peers and their tunnels.
    #[serde(default)]
    pub ipsec: Ipsec,
    /// GRE tunnels.
    #[serde(default)]
    pub gre: Vec<GreTunnel>,
    /// VXLAN tunnels.
    #[serde(default)]
    pub vxlan: Vec<VxlanTunnel>,
    /// Bridge domains.
    #[serde(default)]
    pub bridge: Vec<Bridge>,
    /// Firewall rules and sets.
    #[serde(default)]
    pub firewall: Firewall,
    /// The overlay network this gateway routes for (gatekit-overlay's address plan).
    #[serde(default)]
    pub overlay: Option<Overlay>,
    /// What this gateway advertises to the mesh: the redistribution policy of the prefixes
    /// marked `advertise`.
    #[serde(default)]
    pub advertise: Advertise,
}

/// `[gateway]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GatewaySection {
    /// A name for logs and metrics.
    #[serde(default = "default_name")]
    pub name: String,
    /// Log filter, `tracing` syntax (`info`, `gatekit_esp=debug,info`).
    #[serde(default = "default_log")]
    pub log: String,
    /// Status and Prometheus metrics HTTP endpoint (loopback only).
    #[serde(default)]
    pub metrics: Option<SocketAddr>,
    /// Control socket path for `gatekitctl`.
    #[serde(default)]
    pub ctl: Option<PathBuf>,
    /// Packet buffers in the pool.
    #[serde(default = "default_buffers")]
    pub buffers: usize,
}

fn default_name() -> String {
    "gatekit".into()
}
fn default_log() -> String {
    "info".into()
}
fn default_buffers() -> usize {
    4096
}

impl Default for GatewaySection {
    fn default() -> Self {
        GatewaySection {
            name: default_name(),
            log: default_log(),
            metrics: None,
            ctl: None,
            buffers: default_buffers(),
        }
    }
}

/// `[underlay]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Underlay {
    /// The local underlay address sockets bind to and outer headers carry.
    #[serde(default = "unspecified")]
    pub address: IpAddr,
    /// UDP port for NAT-T ESP and IKE's floated port (RFC 3948), 0 to disable.
    #[serde(default = "default_natt")]
    pub natt_port: u16,
    /// UDP port for VXLAN, 0 to disable.
    #[serde(default = "default_vxlan")]
    pub vxlan_port: u16,
    /// Serve native ESP (IP protocol 50) on a raw socket.
    #[serde(default = "yes")]
    pub native_esp: bool,
    /// Serve GRE (IP protocol 47) on a raw socket.
    #[serde(default = "yes")]
    pub gre: bool,
}

fn unspecified() -> IpAddr {
    IpAddr::from([0, 0, 0, 0])
}
fn default_natt() -> u16 {
    4500
}
fn default_vxlan() -> u16 {
    4789
}
fn yes() -> bool {
    true
}

impl Default for Underlay {
    fn default() -> Self {
        Underlay {
            address: unspecified(),
            natt_port: default_natt(),
            vxlan_port: default_vxlan(),
            native_esp: true,
            gre: true,
        }
    }
}

/// Kind of local interface.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InterfaceKind {
    /// A TUN device: IP packets of a routed site network.
    Tun,
    /// A TAP device: Ethernet frames of a bridged network.
    Tap,
}

/// `[[interface]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Interface {
    /// Name (also the OS device name).
    pub name: String,
    /// TUN or TAP.
    pub kind: InterfaceKind,
    /// The gateway's address on this interface, with the connected prefix.
    #[serde(default)]
    pub address: Option<IpNet>,
    /// MTU.
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Advertise the connected prefix to the mesh (see [`Advertise`]).
    #[serde(default = "yes")]
    pub advertise: bool,
}

fn default_mtu() -> u16 {
    1400
}

/// `[[route]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Route {
    /// Destination prefix.
    pub prefix: IpNet,
    /// Where it goes: `interface:NAME`, `ipsec:PEER` or `gre:NAME`.
    pub via: Spanned<String>,
    /// Metric (lower wins among equal distance).
    #[serde(default)]
    pub metric: u32,
    /// Administrative distance (lower wins; 1 by default, the static source's). A static
    /// route with a distance above another source's is a floating route: it takes over when
    /// that source's route is withdrawn.
    #[serde(default)]
    pub distance: Option<u8>,
    /// Advertise the prefix to the mesh (see [`Advertise`]).
    #[serde(default)]
    pub advertise: bool,
}

/// `[ipsec]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Ipsec {
    /// Peers.
    #[serde(default)]
    pub peer: Vec<IpsecPeer>,
}

/// How ESP travels to a peer.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Encap {
    /// Native ESP, IP protocol 50.
    Native,
    /// ESP in UDP (NAT traversal, RFC 3948).
    Udp,
}

/// `[[ipsec.peer]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IpsecPeer {
    /// Name, referred to by routes and GRE tunnels as `ipsec:NAME`.
    pub name: String,
    /// The peer's underlay address. Behind a NAT this is the NAT's public address; the
    /// real source of the peer's packets is learned and followed (RFC 3948 §3.2).
    pub remote: IpAddr,
    /// Native or UDP-encapsulated.
    #[serde(default = "default_encap")]
    pub encap: Encap,
    /// The peer's UDP port for `encap = "udp"`.
    #[serde(default = "default_natt")]
    pub remote_port: u16,
    /// Seconds between NAT-T keepalives (RFC 3948 §4), 0 to disable.
    #[serde(default = "default_keepalive")]
    pub keepalive: u64,
    /// Route the remote traffic selectors of the tunnel-mode SAs into the peer (tunnel-learned
    /// routes, distance 10), as strongSwan's `install_routes` does.
    #[serde(default = "yes")]
    pub install_routes: bool,
    /// Prefixes this peer gateway advertises to the mesh, written here while no mesh control
    /// protocol carries them: imported as mesh routes (distance 100) through the peer.
    #[serde(default)]
    pub mesh_prefixes: Vec<IpNet>,
    /// Child SAs (one pair each).
    #[serde(default)]
    pub tunnel: Vec<IpsecTunnel>,
}

fn default_encap() -> Encap {
    Encap::Udp
}
fn default_keepalive() -> u64 {
    20
}

/// Tunnel or transport mode.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "lowercase")]
pub enum Mode {
    /// Whole inner IP packets (site-to-site).
    Tunnel,
    /// The gateway's own traffic, e.g. GRE between the gateways.
    Transport,
}

/// AEAD suite.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq, Hash)]
#[serde(rename_all = "kebab-case")]
pub enum Suite {
    /// AES-GCM-128, 16-byte ICV (RFC 4106).
    #[serde(rename = "aes128gcm16")]
    Aes128Gcm,
    /// AES-GCM-256, 16-byte ICV (RFC 4106).
    #[serde(rename = "aes256gcm16")]
    Aes256Gcm,
    /// ChaCha20-Poly1305 (RFC 7634).
    #[serde(rename = "chacha20poly1305")]
    ChaCha20Poly1305,
}

/// `[[ipsec.peer.tunnel]]`: one pair of SAs with static keys.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct IpsecTunnel {
    /// Tunnel or transport.
    #[serde(default = "default_mode")]
    pub mode: Mode,
    /// AEAD.
    #[serde(default = "default_suite")]
    pub suite: Suite,
    /// Our local traffic selector prefixes (tunnel mode).
    #[serde(default)]
    pub local_ts: Vec<IpNet>,
    /// The peer's traffic selector prefixes (tunnel mode).
    #[serde(default)]
    pub remote_ts: Vec<IpNet>,
    /// SPI of the outbound SA (chosen by the peer).
    pub spi_out: u32,
    /// SPI of the inbound SA (chosen by us).
    pub spi_in: u32,
    /// Outbound key and 4-byte salt, hex (16+4, 32+4 or 32+4 bytes by suite).
    pub key_out: Spanned<String>,
    /// Inbound key and salt, hex.
    pub key_in: Spanned<String>,
    /// Anti-replay window in packets.
    #[serde(default = "default_window")]
    pub replay_window: u32,
    /// Use 64-bit extended sequence numbers.
    #[serde(default)]
    pub esn: bool,
}

fn default_mode() -> Mode {
    Mode::Tunnel
}
fn default_suite() -> Suite {
    Suite::Aes128Gcm
}
fn default_window() -> u32 {
    1024
}

/// GRE payload mode.
#[derive(Debug, Clone, Copy, Deserialize, Serialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum GreMode {
    /// IP packets (routed).
    Ip,
    /// Ethernet frames (Transparent Ethernet Bridging, 0x6558).
    Teb,
}

/// `[[gre]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct GreTunnel {
    /// Name, referred to by routes (`gre:NAME`) and bridges.
    pub name: String,
    /// Remote underlay address.
    pub remote: IpAddr,
    /// GRE key (RFC 2890).
    #[serde(default)]
    pub key: Option<u32>,
    /// Routed IP or bridged Ethernet.
    #[serde(default = "default_gre_mode")]
    pub mode: GreMode,
    /// Protect with this IPsec peer's transport-mode SA (GRE over IPsec).
    #[serde(default)]
    pub over_ipsec: Option<Spanned<String>>,
    /// Sequence numbers on and checked.
    #[serde(default)]
    pub sequence: bool,
    /// Tunnel MTU (inner packet size).
    #[serde(default = "default_mtu")]
    pub mtu: u16,
    /// Subnets behind the remote end (`ip` mode): routed into the tunnel as tunnel-learned
    /// routes (distance 10).
    #[serde(default)]
    pub subnets: Vec<IpNet>,
    /// Prefixes the remote gateway advertises to the mesh (`ip` mode), imported as mesh
    /// routes (distance 100) through the tunnel.
    #[serde(default)]
    pub mesh_prefixes: Vec<IpNet>,
}

fn default_gre_mode() -> GreMode {
    GreMode::Teb
}

/// `[[vxlan]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct VxlanTunnel {
    /// Name, referred to by bridges.
    pub name: String,
    /// Remote underlay address.
    pub remote: IpAddr,
    /// VXLAN network identifier (24 bits).
    pub vni: u32,
    /// Remote UDP port.
    #[serde(default = "default_vxlan")]
    pub remote_port: u16,
}

/// `[[bridge]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Bridge {
    /// Name.
    pub name: String,
    /// Member ports: TAP interfaces, GRE (`teb`) and VXLAN tunnels, by name.
    pub ports: Vec<Spanned<String>>,
    /// Seconds a learned MAC lives without traffic.
    #[serde(default = "default_aging")]
    pub aging: u64,
    /// Most MACs learned in this domain.
    #[serde(default = "default_max_macs")]
    pub max_macs: usize,
}

fn default_aging() -> u64 {
    300
}
fn default_max_macs() -> usize {
    65_536
}

/// `[firewall]`
#[derive(Debug, Clone, Default, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Firewall {
    /// Rules in the iptables dialect of the custom chains (`FORWARD_CUST -p tcp ... -j DROP`),
    /// one per line.
    #[serde(default)]
    pub rules: Option<Spanned<String>>,
    /// A file of such rules, relative to the config file.
    #[serde(default)]
    pub rules_file: Option<Spanned<PathBuf>>,
    /// Named sets used by `-m set --match-set NAME`.
    #[serde(default)]
    pub set: Vec<FirewallSet>,
    /// Most tracked connections.
    #[serde(default = "default_conntrack")]
    pub conntrack_max: usize,
}

fn default_conntrack() -> usize {
    262_144
}

/// `[[firewall.set]]`
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct FirewallSet {
    /// Name.
    pub name: String,
    /// Members: prefixes or addresses.
    #[serde(default)]
    pub addresses: Vec<IpNet>,
    /// Members: ports.
    #[serde(default)]
    pub ports: Vec<u16>,
}

/// `[overlay]`: the overlay network's address plan (gatekit-overlay's [`PlanSpec`]) and the
/// interface its transport runs on.
///
/// The plan is checked as gatekit-overlay checks it: prefixes without host bits, clear of the
/// underlay networks and of the site subnets (the `sites` listed here, the connected prefixes
/// of the other interfaces and the static routes marked `advertise`), segments inside the
/// overlay, gateway and reserved addresses inside it.
///
/// [`PlanSpec`]: gatekit_overlay::PlanSpec
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq)]
#[serde(deny_unknown_fields)]
pub struct Overlay {
    /// The overlay's own prefixes (IPv4 and IPv6): routed into `interface` (overlay routes,
    /// distance 5).
    pub prefixes: Vec<IpNet>,
    /// The TUN interface the overlay's transport (a WireGuard-compatible endpoint) delivers
    /// overlay packets on and takes them from.
    pub interface: Spanned<String>,
    /// Underlay networks (the clouds' VPC/VNet ranges) the overlay must not overlap.
    #[serde(default)]
    pub underlay: Vec<IpNet>,
    /// Further site subnets the overlay must not overlap.
    #[serde(default)]
    pub sites: Vec<IpNet>,
    /// The gateway's own overlay addresses; empty means the first host of each prefix. The
    /// gateway answers on them (echo) like on its interface addresses.
    #[serde(default)]
    pub gateway: Vec<IpAddr>,
    /// Addresses no overlay member may have.
    #[serde(default)]
    pub reserved: Vec<IpAddr>,
    /// Segments: `name`, `prefixes`, optional `parent`.
    #[serde(default)]
    pub segment: Vec<gatekit_overlay::SegmentSpec>,
    /// Advertise the overlay prefixes to the mesh (see [`Advertise`]).
    #[serde(default = "yes")]
    pub advertise: bool,
}

impl Overlay {
    /// The address plan this section describes, with `sites` (the subnets reached through
    /// the gateway's other interfaces and routes) added to the ones written here.
    pub fn plan_spec(&self, sites: impl IntoIterator<Item = IpNet>) -> gatekit_overlay::PlanSpec {
        let mut all_sites = self.sites.clone();
        for s in sites {
            if !all_sites.contains(&s) {
                all_sites.push(s);
            }
        }
        gatekit_overlay::PlanSpec {
            prefixes: self.prefixes.clone(),
            underlay: self.underlay.clone(),
            sites: all_sites,
            gateway: self.gateway.clone(),
            reserved: self.reserved.clone(),
            segments: self.segment.clone(),
            ..gatekit_overlay::PlanSpec::default()
        }
    }
}

/// `[advertise]`: the export policy of this gateway's advertised prefixes into the mesh.
///
/// The prefixes marked `advertise` (interfaces' connected prefixes, static routes, the overlay
/// prefixes) form the policy's prefix list, each matched exactly; `prefix_list` filters them
/// further. A prefix is advertised while the RIB has a selected route for it from a
/// connected, static or overlay source, with the metric and tag set here. Routes imported from
/// the mesh that carry `tag` are refused: they are this gateway's own, come back.
#[derive(Debug, Clone, Deserialize, Serialize, PartialEq, Default)]
#[serde(deny_unknown_fields)]
pub struct Advertise {
    /// Tag of exported routes (loop prevention). Default: derived from `gateway.name`.
    #[serde(default)]
    pub tag: Option<u32>,
    /// Metric of exported routes (default: the route's own).
    #[serde(default)]
    pub metric: Option<u32>,
    /// Added to the metric of exported routes.
    #[serde(default)]
    pub add_metric: u32,
    /// A prefix list (`permit|deny PREFIX [ge N] [le M]`, one per line, first match decides,
    /// no match denies) the advertised prefixes must pass. Default: all pass.
    #[serde(default)]
    pub prefix_list: Option<Spanned<String>>,
}

impl Advertise {
    /// The tag this gateway's exports carry.
    pub fn tag_for(&self, gateway_name: &str) -> u32 {
        self.tag.unwrap_or_else(|| {
            // FNV-1a of the name: stable across restarts and builds, and different for
            // different names but for a (rare) collision; set `tag` to be sure.
            let h = gateway_name.bytes().fold(0x811c_9dc5u32, |h, b| {
                (h ^ u32::from(b)).wrapping_mul(0x0100_0193)
            });
            h.max(1)
        })
    }

    /// The operator's prefix list, parsed (`None` when there is none).
    pub fn parsed_prefix_list(
        &self,
    ) -> Option<Result<gatekit_route::PrefixList, gatekit_route::PolicyError>> {
        self.prefix_list
            .as_ref()
            .map(|t| gatekit_route::PrefixList::parse(t.get_ref()))
    }
}

/// Where a route points, resolved.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Via {
    /// A local interface, by index into [`Config::interface`].
    Interface(usize),
    /// An IPsec peer, by index into `ipsec.peer`.
    Ipsec(usize),
    /// A GRE tunnel, by index into [`Config::gre`].
    Gre(usize),
}

impl Config {
    /// Reads and validates a config file.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let file = path.display().to_string();
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError {
            file: file.clone(),
            line: 0,
            column: 0,
            key: "-".into(),
            message: format!("cannot read: {e}"),
        })?;
        let mut cfg = Config::parse(&file, &text)?;
        // Rules from a file are read now so that a reload sees a consistent pair.
        if let Some(rf) = cfg.firewall.rules_file.clone() {
            let p = path.parent().unwrap_or(Path::new(".")).join(rf.get_ref());
            let rules = std::fs::read_to_string(&p).map_err(|e| {
                at(
                    &file,
                    &text,
                    rf.span(),
                    "firewall.rules_file",
                    format!("cannot read {}: {e}", p.display()),
                )
            })?;
            let mut all = cfg
                .firewall
                .rules
                .as_ref()
                .map(|r| r.get_ref().clone())
                .unwrap_or_default();
            all.push('\n');
            all.push_str(&rules);
            cfg.firewall.rules = Some(Spanned::new(rf.span(), all));
        }
        Ok(cfg)
    }

    /// Parses and validates config text; `file` names it in errors.
    pub fn parse(file: &str, text: &str) -> Result<Config, ConfigError> {
        let de = toml::Deserializer::parse(text).map_err(|e| toml_err(file, text, "-", &e))?;
        let cfg: Config = serde_path_to_error::deserialize(de).map_err(|e| {
            let key = e.path().to_string();
            toml_err(file, text, &key, e.inner())
        })?;
        cfg.validate(file, text)?;
        Ok(cfg)
    }

    /// Resolves a route's `via`.
    pub fn resolve_via(&self, via: &str) -> Option<Via> {
        let (kind, name) = via.split_once(':')?;
        match kind {
            "interface" => self
                .interface
                .iter()
                .position(|i| i.name == name)
                .map(Via::Interface),
            "ipsec" => self
                .ipsec
                .peer
                .iter()
                .position(|p| p.name == name)
                .map(Via::Ipsec),
            "gre" => self.gre.iter().position(|g| g.name == name).map(Via::Gre),
            _ => None,
        }
    }
}

impl Config {
    /// The subnets reached through the gateway other than the overlay: the connected prefixes
    /// of the TUN interfaces other than the overlay's, and the static routes marked `advertise`.
    pub fn site_subnets(&self) -> Vec<IpNet> {
        let overlay_if = self
            .overlay
            .as_ref()
            .map(|o| o.interface.get_ref().as_str());
        let mut sites: Vec<IpNet> = self
            .interface
            .iter()
            .filter(|i| i.kind == InterfaceKind::Tun && Some(i.name.as_str()) != overlay_if)
            .filter_map(|i| i.address.map(|a| a.trunc()))
            .collect();
        for r in self.route.iter().filter(|r| r.advertise) {
            sites.push(r.prefix.trunc());
        }
        sites.sort();
        sites.dedup();
        sites
    }

    /// The overlay's address plan, checked (`None` without an `[overlay]` section).
    pub fn overlay_plan(
        &self,
    ) -> Option<Result<gatekit_overlay::AddressPlan, gatekit_overlay::PlanError>> {
        let o = self.overlay.as_ref()?;
        Some(gatekit_overlay::AddressPlan::new(
            o.plan_spec(self.site_subnets()),
        ))
    }

    fn validate_overlay(&self, file: &str, text: &str) -> Result<(), ConfigError> {
        let Some(o) = &self.overlay else {
            return Ok(());
        };
        let name = o.interface.get_ref();
        if !self
            .interface
            .iter()
            .any(|i| &i.name == name && i.kind == InterfaceKind::Tun)
        {
            return Err(at(
                file,
                text,
                o.interface.span(),
                "overlay.interface",
                format!("`{name}`: expected the name of a `tun` interface"),
            ));
        }
        let Some(Err(e)) = self.overlay_plan() else {
            return Ok(());
        };
        use gatekit_overlay::PlanError as P;
        let field = match &e {
            P::OutsideParent { .. }
            | P::DuplicateSegment(_)
            | P::UnknownParent { .. }
            | P::Cycle(_)
            | P::EmptySegment(_)
            | P::BadName { .. } => "segment",
            P::HostBits { what, .. } | P::Overlap { what, .. } if what.starts_with("segment") => {
                "segment"
            }
            P::AddressOutside { what, .. } if *what == "reserved" => "reserved",
            P::AddressOutside { .. } => "gateway",
            _ => "prefixes",
        };
        let key = format!("overlay.{field}");
        // Fields not written on a line of their own (a segment) point at the section.
        let line = match find_line(text, &key) {
            0 => text
                .lines()
                .position(|l| l.trim() == "[overlay]")
                .map_or(0, |i| i + 1),
            n => n,
        };
        Err(ConfigError {
            file: file.into(),
            line,
            column: 1,
            key,
            message: e.to_string(),
        })
    }
}

/// Decodes hex digits (whitespace and `:` ignored).
pub fn decode_hex(s: &str) -> Option<Vec<u8>> {
    let digits: Vec<u8> = s
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b':')
        .collect();
    let digits = digits.strip_prefix(b"0x").unwrap_or(&digits);
    if !digits.len().is_multiple_of(2) {
        return None;
    }
    digits
        .chunks(2)
        .map(|p| {
            let h = (p[0] as char).to_digit(16)?;
            let l = (p[1] as char).to_digit(16)?;
            Some((h * 16 + l) as u8)
        })
        .collect()
}

/// Entry points shared by the fuzz targets in `fuzz/` and the corpus-replay tests. Not a
/// stable API.
#[doc(hidden)]
pub mod fuzz {
    use super::Config;

    /// Config text of any bytes: it parses and validates, and then the pipeline builds or
    /// says why not; or it is refused with an error that points into the text. Never a panic.
    pub fn config(data: &[u8]) {
        let Ok(text) = std::str::from_utf8(data) else {
            return;
        };
        match Config::parse("fuzz.toml", text) {
            Ok(cfg) => {
                let _ = cfg.site_subnets();
                let _ = cfg.overlay_plan();
                for r in &cfg.route {
                    let _ = cfg.resolve_via(r.via.get_ref());
                }
                let _ = crate::routing::Routing::new(&cfg);
                let _ = crate::pipeline::Gateway::new(cfg, gatekit_packet::Instant::ZERO);
            }
            Err(e) => {
                let lines = text.lines().count();
                assert!(e.line <= lines + 1, "line {} of {lines}", e.line);
                assert!(!e.message.is_empty() && !e.key.is_empty());
                assert!(e.to_string().contains("fuzz.toml"));
            }
        }
    }
}
