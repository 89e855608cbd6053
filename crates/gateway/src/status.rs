//! What the gateway shows about itself: a snapshot of its state and counters, taken by the
//! data path now and then and read by the control plane (metrics endpoint, `gatekitctl`).

use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;

/// The gateway's state at one moment. Serializable as JSON for `gatekitctl --json` and the
/// `/status` endpoint; rendered as Prometheus text for `/metrics`.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct Snapshot {
    /// The gateway's name.
    pub name: String,
    /// Seconds since start.
    pub uptime_secs: f64,
    /// Configurations applied so far (1 after start, +1 per successful reload).
    pub config_generation: u64,
    /// Reloads refused because the new config was bad.
    pub reload_failures: u64,
    /// Per-interface and per-underlay-socket traffic.
    pub interfaces: Vec<InterfaceStatus>,
    /// IPsec security associations.
    pub sas: Vec<SaStatus>,
    /// Routes of the RIB (selected or not).
    pub routes: Vec<RouteStatus>,
    /// What this gateway advertises to the mesh (its export policy applied to the RIB).
    #[serde(default)]
    pub advertised: Vec<AdvertStatus>,
    /// The tag its advertisements carry (routes coming back with it are refused).
    #[serde(default)]
    pub advertise_tag: u32,
    /// The MAC tables of the bridge domains.
    pub macs: Vec<MacStatus>,
    /// Tracked connections (possibly truncated to the first entries; see `conntrack_total`).
    pub conntrack: Vec<ConnStatus>,
    /// Connections tracked in all.
    pub conntrack_total: u64,
    /// Firewall rules with their hit counters.
    pub firewall_rules: Vec<RuleStatus>,
    /// The firewall engine's packet counters.
    #[serde(default)]
    pub firewall: FirewallCounters,
    /// Drops by reason (`DropReason::as_str`), summed over the whole data path.
    pub drops: BTreeMap<String, u64>,
    /// Ports being captured to pcap: port name → file.
    pub captures: BTreeMap<String, String>,
}

/// Traffic of one port.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct InterfaceStatus {
    /// Name (`lan0`, `underlay-udp`, `underlay-esp`, `gre-b`, ...).
    pub name: String,
    /// Kind (`tun`, `tap`, `udp`, `raw-esp`, `raw-gre`, `gre`, `vxlan`, ...).
    pub kind: String,
    /// Packets received.
    pub rx_packets: u64,
    /// Bytes received.
    pub rx_bytes: u64,
    /// Packets sent.
    pub tx_packets: u64,
    /// Bytes sent.
    pub tx_bytes: u64,
    /// Packets dropped at this port (errors, full queues, too big).
    pub drops: u64,
}

/// One SA.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct SaStatus {
    /// The IPsec peer's name.
    pub peer: String,
    /// SPI.
    pub spi: u32,
    /// `in` or `out`.
    pub direction: String,
    /// `tunnel` or `transport`.
    pub mode: String,
    /// Suite name (`aes128gcm16`, ...).
    pub suite: String,
    /// `native` or `udp:ADDR:PORT`.
    pub encap: String,
    /// Packets processed.
    pub packets: u64,
    /// Bytes processed.
    pub bytes: u64,
    /// Drops on this SA by reason.
    pub drops: BTreeMap<String, u64>,
    /// `active`, `soft-expired` (rekey due), `expired`, `retiring` (grace period).
    pub state: String,
}

/// One route.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RouteStatus {
    /// Prefix in canonical form.
    pub prefix: String,
    /// Next hop (`interface:lan0`, `ipsec:site-b`, `gre:gre-b`).
    pub via: String,
    /// Source (`connected`, `static`, `overlay`, `tunnel`, `mesh`, `bgp`).
    pub source: String,
    /// Administrative distance.
    pub distance: u32,
    /// Metric.
    pub metric: u32,
    /// Whether it is the best path (in the FIB).
    pub selected: bool,
    /// False when the route was disabled (it stays in the RIB, never selected).
    #[serde(default = "enabled")]
    pub enabled: bool,
}

fn enabled() -> bool {
    true
}

/// One prefix this gateway advertises to the mesh.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct AdvertStatus {
    /// Prefix in canonical form.
    pub prefix: String,
    /// The source of the selected route it was exported from (`connected`, `static`,
    /// `overlay`).
    pub from: String,
    /// The metric advertised.
    pub metric: u32,
    /// The tag advertised.
    pub tag: u32,
}

/// One learned or static MAC.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct MacStatus {
    /// Bridge domain.
    pub bridge: String,
    /// MAC address, `aa:bb:cc:dd:ee:ff`.
    pub mac: String,
    /// Port it was learned on.
    pub port: String,
    /// VLAN, if any.
    pub vlan: Option<u16>,
    /// Seconds since last seen.
    pub age_secs: u64,
    /// Configured rather than learned.
    pub is_static: bool,
}

/// One tracked connection.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct ConnStatus {
    /// Protocol name or number.
    pub proto: String,
    /// Original source `addr:port`.
    pub src: String,
    /// Original destination `addr:port`.
    pub dst: String,
    /// State (`new`, `established`, `time_wait`, ...).
    pub state: String,
    /// The translation applied, if any (`dnat 198.51.100.2:8888`).
    pub nat: Option<String>,
    /// Seconds until it expires.
    pub expires_secs: u64,
    /// Packets seen, both directions.
    pub packets: u64,
}

/// Packets through the firewall engine.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct FirewallCounters {
    /// Packets the engine looked at.
    pub packets: u64,
    /// Packets it let through.
    pub accepted: u64,
    /// Packets answered with a TCP RST or an ICMP error.
    pub rejected: u64,
    /// Packets it translated (NAT).
    pub translated: u64,
    /// Accepted packets of established flows that followed the path remembered from the
    /// flow's previous packet instead of walking the chains again.
    pub fast_path: u64,
}

/// One firewall rule.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
pub struct RuleStatus {
    /// Chain.
    pub chain: String,
    /// Position in the chain (0-based).
    pub index: usize,
    /// The rule as written.
    pub text: String,
    /// Packets matched.
    pub packets: u64,
    /// Bytes matched.
    pub bytes: u64,
}

/// A request to the running gateway, from `gatekitctl` or a signal.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "cmd", rename_all = "snake_case")]
pub enum Command {
    /// The current [`Snapshot`].
    Status,
    /// Re-read the config file and apply it atomically (SIGHUP does the same).
    Reload,
    /// Start capturing a port to a pcap file.
    CaptureStart {
        /// Port name.
        port: String,
        /// Output pcap path.
        file: String,
    },
    /// Stop capturing a port.
    CaptureStop {
        /// Port name.
        port: String,
    },
    /// Stop the gateway gracefully (SIGTERM does the same).
    Stop,
}

/// The gateway's answer to a [`Command`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
pub enum Reply {
    /// The state asked for.
    Status(Box<Snapshot>),
    /// Done; with a human-readable note.
    Ok {
        /// What was done.
        message: String,
    },
    /// Refused or failed; with the reason (a config error names file, line and key).
    Error {
        /// Why.
        message: String,
    },
}
