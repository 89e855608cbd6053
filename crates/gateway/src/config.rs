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

    fn validate(&self, file: &str, text: &str) -> Result<(), ConfigError> {
        let err0 = |key: String, message: String| ConfigError {
            file: file.into(),
            line: find_line(text, &key),
            column: 1,
            key,
            message,
        };
        // Names are unique across everything a route or bridge can refer to.
        let mut names = BTreeSet::new();
        let all_names = self
            .interface
            .iter()
            .map(|i| ("interface", &i.name))
            .chain(self.ipsec.peer.iter().map(|p| ("ipsec.peer", &p.name)))
            .chain(self.gre.iter().map(|g| ("gre", &g.name)))
            .chain(self.vxlan.iter().map(|v| ("vxlan", &v.name)))
            .chain(self.bridge.iter().map(|b| ("bridge", &b.name)));
        for (kind, name) in all_names {
            if name.is_empty()
                || name.len() > 15
                || !name
                    .bytes()
                    .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_' || b == b'.')
            {
                return Err(err0(
                    format!("{kind}.name"),
                    format!(
                        "`{name}`: expected 1 to 15 letters, digits, `-`, `_` or `.` (an interface name)"
                    ),
                ));
            }
            if !names.insert(name.clone()) {
                return Err(err0(
                    format!("{kind}.name"),
                    format!("`{name}` is defined twice"),
                ));
            }
        }
        for (i, r) in self.route.iter().enumerate() {
            if self.resolve_via(r.via.get_ref()).is_none() {
                return Err(at(
                    file,
                    text,
                    r.via.span(),
                    &format!("route[{i}].via"),
                    format!(
                        "`{}` names nothing: expected `interface:NAME`, `ipsec:PEER` or `gre:NAME` of a defined one",
                        r.via.get_ref()
                    ),
                ));
            }
        }
        for (pi, p) in self.ipsec.peer.iter().enumerate() {
            for (ti, t) in p.tunnel.iter().enumerate() {
                let key = format!("ipsec.peer[{pi}].tunnel[{ti}]");
                let want = match t.suite {
                    Suite::Aes128Gcm => 20,
                    Suite::Aes256Gcm | Suite::ChaCha20Poly1305 => 36,
                };
                for (name, k) in [("key_out", &t.key_out), ("key_in", &t.key_in)] {
                    match decode_hex(k.get_ref()) {
                        Some(b) if b.len() == want => {}
                        Some(b) => {
                            return Err(at(
                                file,
                                text,
                                k.span(),
                                &format!("{key}.{name}"),
                                format!(
                                    "{} bytes of key material, expected {want} (key + 4-byte salt) for {:?}",
                                    b.len(),
                                    t.suite
                                ),
                            ));
                        }
                        None => {
                            return Err(at(
                                file,
                                text,
                                k.span(),
                                &format!("{key}.{name}"),
                                "expected hexadecimal digits (an even number of them)".into(),
                            ));
                        }
                    }
                }
                for (name, spi) in [("spi_out", t.spi_out), ("spi_in", t.spi_in)] {
                    // RFC 4303 §2.1: SPIs 1..=255 are reserved by IANA, 0 is local-use only.
                    if spi < 256 {
                        return Err(err0(
                            format!("{key}.{name}"),
                            format!("SPI {spi} is reserved (RFC 4303 §2.1): expected 256 or more"),
                        ));
                    }
                }
                if t.mode == Mode::Tunnel && (t.local_ts.is_empty() || t.remote_ts.is_empty()) {
                    return Err(err0(
                        key.clone(),
                        "a tunnel-mode SA needs local_ts and remote_ts prefixes".into(),
                    ));
                }
                if !t.replay_window.is_power_of_two() || t.replay_window < 64 {
                    return Err(err0(
                        format!("{key}.replay_window"),
                        format!("{}: expected a power of two, 64 or more", t.replay_window),
                    ));
                }
            }
            if p.encap == Encap::Udp && p.remote_port == 0 {
                return Err(err0(
                    format!("ipsec.peer[{pi}].remote_port"),
                    "expected a UDP port, not 0".into(),
                ));
            }
        }
        let mut spis = BTreeSet::new();
        for p in &self.ipsec.peer {
            for t in &p.tunnel {
                if !spis.insert(t.spi_in) {
                    return Err(err0(
                        "ipsec.peer.tunnel.spi_in".into(),
                        format!(
                            "inbound SPI {:#x} is used twice: inbound SPIs identify SAs and must be unique",
                            t.spi_in
                        ),
                    ));
                }
            }
        }
        for (gi, g) in self.gre.iter().enumerate() {
            if let Some(peer) = &g.over_ipsec {
                let ok = self.ipsec.peer.iter().any(|p| {
                    &p.name == peer.get_ref() && p.tunnel.iter().any(|t| t.mode == Mode::Transport)
                });
                if !ok {
                    return Err(at(
                        file,
                        text,
                        peer.span(),
                        &format!("gre[{gi}].over_ipsec"),
                        format!(
                            "`{}`: expected the name of an IPsec peer with a transport-mode tunnel",
                            peer.get_ref()
                        ),
                    ));
                }
            }
        }
        for (vi, v) in self.vxlan.iter().enumerate() {
            if v.vni >= 1 << 24 {
                return Err(err0(
                    format!("vxlan[{vi}].vni"),
                    format!("{}: expected a 24-bit VNI (0 to 16777215)", v.vni),
                ));
            }
        }
        for (bi, b) in self.bridge.iter().enumerate() {
            for p in &b.ports {
                let name = p.get_ref();
                let ok = self
                    .interface
                    .iter()
                    .any(|i| &i.name == name && i.kind == InterfaceKind::Tap)
                    || self
                        .gre
                        .iter()
                        .any(|g| &g.name == name && g.mode == GreMode::Teb)
                    || self.vxlan.iter().any(|v| &v.name == name);
                if !ok {
                    return Err(at(
                        file,
                        text,
                        p.span(),
                        &format!("bridge[{bi}].ports"),
                        format!(
                            "`{name}`: expected a TAP interface, a GRE tunnel in `teb` mode or a VXLAN tunnel"
                        ),
                    ));
                }
            }
        }
        for (ri, r) in self.route.iter().enumerate() {
            if r.distance == Some(0) {
                return Err(err0(
                    format!("route[{ri}].distance"),
                    "0 is the distance of connected routes: expected 1 to 255".into(),
                ));
            }
        }
        for (gi, g) in self.gre.iter().enumerate() {
            if g.mode == GreMode::Teb && !(g.subnets.is_empty() && g.mesh_prefixes.is_empty()) {
                return Err(err0(
                    format!("gre[{gi}].subnets"),
                    format!(
                        "`{}` bridges Ethernet (mode `teb`): only a tunnel in `ip` mode routes subnets",
                        g.name
                    ),
                ));
            }
        }
        self.validate_overlay(file, text)?;
        if let Some(Err(e)) = self.advertise.parsed_prefix_list() {
            let (line, reason) = match &e {
                gatekit_route::PolicyError::Syntax { line, reason } => (*line, reason.clone()),
                other => (1, other.to_string()),
            };
            let span = self
                .advertise
                .prefix_list
                .as_ref()
                .map_or(0..0, |p| p.span());
            // A multi-line string's first line is the one after its opening quotes.
            let opening = text.get(span.clone()).unwrap_or("");
            let skip = usize::from(opening.starts_with("\"\"\"\n") || opening.starts_with("'''\n"));
            let (first, _) = line_col(text, span.start);
            return Err(ConfigError {
                file: file.into(),
                line: first + skip + line - 1,
                column: 1,
                key: "advertise.prefix_list".into(),
                message: format!("line {line} of the list: {reason}"),
            });
        }
        if let Some(m) = self.gateway.metrics
            && !m.ip().is_loopback()
        {
            return Err(err0(
                "gateway.metrics".into(),
                format!("{m}: expected a loopback address (the endpoint has no authentication)"),
            ));
        }
        Ok(())
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

fn line_col(text: &str, offset: usize) -> (usize, usize) {
    let before = &text[..offset.min(text.len())];
    let line = before.matches('\n').count() + 1;
    let col = before.rsplit('\n').next().map_or(0, |l| l.chars().count()) + 1;
    (line, col)
}

fn at(
    file: &str,
    text: &str,
    span: std::ops::Range<usize>,
    key: &str,
    message: String,
) -> ConfigError {
    let (line, column) = line_col(text, span.start);
    ConfigError {
        file: file.into(),
        line,
        column,
        key: key.into(),
        message,
    }
}

fn toml_err(file: &str, text: &str, key: &str, e: &toml::de::Error) -> ConfigError {
    let (line, column) = e.span().map_or((0, 0), |s| line_col(text, s.start));
    ConfigError {
        file: file.into(),
        line,
        column,
        key: if key.is_empty() || key == "." {
            "-".into()
        } else {
            key.into()
        },
        message: e.message().trim().to_string(),
    }
}

/// Best effort: the line where the last segment of `key` is assigned, for errors found after
/// parsing on values that carry no span.
fn find_line(text: &str, key: &str) -> usize {
    let last = key.rsplit('.').next().unwrap_or(key);
    let last = last.split('[').next().unwrap_or(last);
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.starts_with(last) && l[last.len()..].trim_start().starts_with('=')
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
[gateway]
name = "site-a"
metrics = "127.0.0.1:9100"

[underlay]
address = "192.0.2.1"

[[interface]]
name = "lan0"
kind = "tun"
address = "10.1.0.1/24"

[[route]]
prefix = "10.2.0.0/16"
via = "ipsec:site-b"

[[ipsec.peer]]
name = "site-b"
remote = "198.51.100.2"
encap = "udp"

[[ipsec.peer.tunnel]]
local_ts = ["10.1.0.0/16"]
remote_ts = ["10.2.0.0/16"]
spi_out = 0x2001
spi_in = 0x1001
key_out = "0102030405060708090a0b0c0d0e0f10 11121314"
key_in = "1102030405060708090a0b0c0d0e0f10 21222324"
"#;

    #[test]
    fn good_config_parses() {
        let c = Config::parse("a.toml", GOOD).unwrap();
        assert_eq!(c.gateway.name, "site-a");
        assert_eq!(c.resolve_via("ipsec:site-b"), Some(Via::Ipsec(0)));
        assert_eq!(c.ipsec.peer[0].tunnel[0].suite, Suite::Aes128Gcm);
        assert_eq!(c.ipsec.peer[0].keepalive, 20);
    }

    fn err(text: &str) -> ConfigError {
        Config::parse("site.toml", text).unwrap_err()
    }

    #[test]
    fn unknown_key_names_line_and_key() {
        let e = err(&GOOD.replace("encap = \"udp\"", "encap = \"udp\"\nencapsulation = 1"));
        assert_eq!(e.key, "ipsec.peer[0].encapsulation");
        assert_eq!(e.line, 22);
        assert!(e.message.contains("unknown field `encapsulation`"), "{e}");
        assert!(e.to_string().starts_with("site.toml:22:"), "{e}");
    }

    #[test]
    fn bad_values_say_what_was_expected() {
        let e = err(&GOOD.replace("10.2.0.0/16\"\nvia", "10.2.0.0/33\"\nvia"));
        assert_eq!(e.key, "route[0].prefix");
        assert_eq!(e.line, 15);
        let e = err(&GOOD.replace("encap = \"udp\"", "encap = \"tcp\""));
        assert!(e.message.contains("expected `native` or `udp`"), "{e}");
        let e = err(&GOOD.replace("via = \"ipsec:site-b\"", "via = \"ipsec:site-c\""));
        assert_eq!((e.key.as_str(), e.line), ("route[0].via", 16));
        let e = err(&GOOD.replace(" 11121314\"", "\""));
        assert_eq!(e.key, "ipsec.peer[0].tunnel[0].key_out");
        assert!(
            e.message.contains("16 bytes of key material, expected 20"),
            "{e}"
        );
        let e = err(&GOOD.replace("spi_in = 0x1001", "spi_in = 7"));
        assert!(e.message.contains("reserved"), "{e}");
        let e = err(&GOOD.replace("127.0.0.1:9100", "0.0.0.0:9100"));
        assert_eq!(e.key, "gateway.metrics");
        let e = err("[gateway\nname=1");
        assert_eq!(e.line, 1);
        assert_eq!(e.key, "-");
    }

    #[test]
    fn hex() {
        assert_eq!(decode_hex("0x0a:0B ff"), Some(vec![10, 11, 255]));
        assert_eq!(decode_hex("abc"), None);
        assert_eq!(decode_hex("zz"), None);
    }
}

#[cfg(test)]
mod overlay_tests {
    use super::*;

    const SITE: &str = r#"
[gateway]
name = "site-a"

[underlay]
address = "192.0.2.1"

[[interface]]
name = "lan0"
kind = "tun"
address = "10.1.0.1/24"

[[interface]]
name = "ovl0"
kind = "tun"
address = "169.254.100.1/30"
advertise = false

[overlay]
prefixes = ["10.100.0.0/16", "fd00:100::/48"]
interface = "ovl0"
underlay = ["172.31.0.0/16"]

[[overlay.segment]]
name = "eng"
prefixes = ["10.100.1.0/24"]

[advertise]
tag = 65001
metric = 10
prefix_list = """
deny 10.1.128.0/17 le 32
permit 0.0.0.0/0 le 32
permit ::/0 le 128
"""
"#;

    fn err(text: &str) -> ConfigError {
        Config::parse("site.toml", text).unwrap_err()
    }

    fn line_of(text: &str, needle: &str) -> usize {
        text.lines().position(|l| l.contains(needle)).unwrap() + 1
    }

    #[test]
    fn overlay_and_advertise_parse() {
        let c = Config::parse("site.toml", SITE).unwrap();
        let o = c.overlay.as_ref().unwrap();
        assert_eq!(o.interface.get_ref(), "ovl0");
        assert!(o.advertise);
        let plan = c.overlay_plan().unwrap().unwrap();
        assert_eq!(plan.segment("eng").unwrap().prefixes.len(), 1);
        // The first host of each prefix is the gateway's, unless the section says otherwise.
        assert_eq!(plan.gateway()[0].to_string(), "10.100.0.1");
        assert_eq!(c.site_subnets(), ["10.1.0.0/24".parse::<IpNet>().unwrap()]);
        assert_eq!(c.advertise.tag_for(&c.gateway.name), 65001);
        let pl = c.advertise.parsed_prefix_list().unwrap().unwrap();
        assert!(!pl.permits(&"10.1.200.0/24".parse().unwrap()));
        // Without a tag the name decides it: stable, and distinct between gateways.
        let none = Advertise::default();
        assert_eq!(none.tag_for("site-a"), none.tag_for("site-a"));
        assert_ne!(none.tag_for("site-a"), none.tag_for("site-b"));
    }

    #[test]
    fn overlay_errors_name_key_and_line() {
        let e = err(&SITE.replace("interface = \"ovl0\"", "interface = \"ovl0\"\nmtu = 1400"));
        assert_eq!(e.key, "overlay.mtu");
        assert!(e.message.contains("unknown field `mtu`"), "{e}");
        assert_eq!(e.line, line_of(SITE, "interface = \"ovl0\"") + 1);

        let bad = SITE.replace("\"10.100.0.0/16\"", "\"10.100.0.0/33\"");
        let e = err(&bad);
        assert_eq!(e.key, "overlay.prefixes[0]", "{e}");
        assert_eq!(e.line, line_of(&bad, "10.100.0.0/33"));

        let e = err(&SITE.replace("\"10.100.0.0/16\"", "\"10.100.7.0/16\""));
        assert_eq!(e.key, "overlay.prefixes");
        assert!(
            e.message.contains("host bits") && e.message.contains("10.100.0.0/16"),
            "{e}"
        );

        // A site subnet inside the overlay: lan0's connected prefix.
        let e = err(&SITE.replace("10.1.0.1/24", "10.100.9.1/24"));
        assert_eq!(e.key, "overlay.prefixes");
        assert!(
            e.message.contains("overlaps") && e.message.contains("10.100.9.0/24"),
            "{e}"
        );
        let e = err(&SITE.replace("172.31.0.0/16", "10.0.0.0/8"));
        assert!(e.message.contains("underlay"), "{e}");

        let e = err(&SITE.replace("\"10.100.1.0/24\"", "\"10.200.1.0/24\""));
        assert_eq!(e.key, "overlay.segment");
        assert!(e.message.contains("segment eng"), "{e}");

        let bad = SITE.replace("interface = \"ovl0\"", "interface = \"ovl9\"");
        let e = err(&bad);
        assert_eq!(e.key, "overlay.interface");
        assert_eq!(e.line, line_of(&bad, "ovl9"));
        assert!(
            e.message.contains("`ovl9`: expected the name of a `tun`"),
            "{e}"
        );

        let e = err(&SITE.replace("interface = \"ovl0\"\n", ""));
        assert!(e.message.contains("missing field `interface`"), "{e}");
        let e = err(&SITE.replace("\"10.100.0.0/16\", \"fd00:100::/48\"", ""));
        assert_eq!(e.key, "overlay.prefixes");
        assert!(e.message.contains("no prefix"), "{e}");
    }

    #[test]
    fn advertise_and_route_errors() {
        let bad = SITE.replace("permit 0.0.0.0/0 le 32", "permit 0.0.0.0/0 le 33");
        let e = err(&bad);
        assert_eq!(e.key, "advertise.prefix_list");
        assert_eq!(e.line, line_of(&bad, "le 33"), "{e}");
        assert!(e.message.starts_with("line 2 of the list"), "{e}");
        let bad = SITE.replace("deny 10.1.128.0/17", "refuse 10.1.128.0/17");
        let e = err(&bad);
        assert_eq!(e.line, line_of(&bad, "refuse"), "{e}");
        assert!(e.message.contains("expected `permit` or `deny`"), "{e}");

        let e = err(&SITE.replace("metric = 10", "metric = 10\nmetirc = 3"));
        assert_eq!(e.key, "advertise.metirc");

        let route =
            "\n[[route]]\nprefix = \"10.3.0.0/16\"\nvia = \"interface:lan0\"\ndistance = 0\n";
        let e = err(&format!("{SITE}{route}"));
        assert_eq!(e.key, "route[0].distance");
        assert!(e.message.contains("expected 1 to 255"), "{e}");
        let e = err(&format!("{SITE}{}", route.replace("= 0", "= 256")));
        assert_eq!(e.key, "route[0].distance");

        let gre = "\n[[gre]]\nname = \"g1\"\nremote = \"192.0.2.9\"\nsubnets = [\"10.5.0.0/16\"]\n";
        let e = err(&format!("{SITE}{gre}"));
        assert_eq!(e.key, "gre[0].subnets");
        assert!(e.message.contains("`teb`"), "{e}");
        let ok = format!("{SITE}{}", gre.replace("subnets", "mode = \"ip\"\nsubnets"));
        Config::parse("site.toml", &ok).unwrap();
    }
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
