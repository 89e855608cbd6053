//! VXLAN (RFC 7348): a VXLAN tunnel endpoint that encapsulates Ethernet frames over UDP 4789
//! and decapsulates them, in place.

use crate::outer::{self, Template};
use crate::vxlan::{VXLAN_PORT, VxlanPacket, VxlanRepr};
use crate::{ConfigError, Decap, Encap, TunnelId, TunnelIndex, count, gre::protocol};
use core::net::IpAddr;
use etherparse::IpNumber;
use gatekit_packet::{DropCounters, DropReason, PacketBuf, checksum};

/// The local side of a VXLAN endpoint.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VtepConfig {
    /// Our outer address.
    pub local: IpAddr,
    /// UDP destination port sent to and accepted (4789, RFC 7348 §5).
    pub port: u16,
    /// Outer TTL / hop limit.
    pub ttl: u8,
    /// Compute UDP checksums over IPv4 (RFC 7348 §5 allows zero). Over IPv6 they are always
    /// computed (RFC 8200 §8.1).
    pub udp_checksum_v4: bool,
    /// Largest inner Ethernet frame carried (1500-byte underlay: 1450 over IPv4).
    pub mtu: usize,
}

impl VtepConfig {
    /// An endpoint on `local`, port 4789, TTL 64, no IPv4 UDP checksum, the MTU a 1500-byte
    /// underlay leaves.
    pub fn new(local: IpAddr) -> Self {
        let outer = if local.is_ipv4() { 20 } else { 40 };
        VtepConfig {
            local,
            port: VXLAN_PORT,
            ttl: 64,
            udp_checksum_v4: false,
            mtu: 1500 - outer - 16,
        }
    }
}

/// Counters of one VXLAN tunnel (remote endpoint and VNI).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct VxlanStats {
    /// Frames encapsulated.
    pub tx_packets: u64,
    /// Frame bytes encapsulated.
    pub tx_bytes: u64,
    /// Frames decapsulated.
    pub rx_packets: u64,
    /// Frame bytes decapsulated.
    pub rx_bytes: u64,
    /// Frames too big for the MTU (dropped).
    pub too_big: u64,
}

#[derive(Debug, Clone)]
struct VxTunnel {
    remote: IpAddr,
    vni: u32,
    /// Outer IP, UDP (ports and length patched per packet) and VXLAN headers.
    template: Template,
    stats: VxlanStats,
}

/// A VXLAN tunnel endpoint (VTEP): tunnels to remote endpoints, one per (remote, VNI).
#[derive(Debug)]
pub struct Vtep {
    cfg: VtepConfig,
    tunnels: Vec<VxTunnel>,
    index: TunnelIndex<(IpAddr, u32)>,
    drops: DropCounters,
}

impl Vtep {
    /// An endpoint with no tunnels.
    pub fn new(cfg: VtepConfig) -> Result<Self, ConfigError> {
        let max = 65535 - 56;
        if cfg.mtu < 60 || cfg.mtu > max {
            return Err(ConfigError::Mtu {
                mtu: cfg.mtu,
                min: 60,
                max,
            });
        }
        Ok(Vtep {
            cfg,
            tunnels: Vec::new(),
            index: TunnelIndex::default(),
            drops: DropCounters::default(),
        })
    }

    /// The endpoint's configuration.
    pub fn config(&self) -> &VtepConfig {
        &self.cfg
    }

    /// Adds a tunnel to `remote` for `vni`.
    pub fn add_tunnel(&mut self, remote: IpAddr, vni: u32) -> Result<TunnelId, ConfigError> {
        if vni > VxlanRepr::MAX_VNI {
            return Err(ConfigError::Vni { vni });
        }
        if remote.is_ipv4() != self.cfg.local.is_ipv4() {
            return Err(ConfigError::MixedFamilies {
                local: self.cfg.local,
                remote,
            });
        }
        if self.index.contains(&(remote, vni)) {
            return Err(ConfigError::Duplicate {
                local: self.cfg.local,
                remote,
                key: Some(vni),
            });
        }
        let n = u32::try_from(self.tunnels.len())
            .map_err(|_| ConfigError::NoSuchTunnel { id: u32::MAX })?;
        let mut hdr = [0u8; 16];
        hdr[2..4].copy_from_slice(&self.cfg.port.to_be_bytes());
        // Cannot fail: the VNI was checked and the buffer is 8 bytes.
        let _ = VxlanRepr { vni }.emit(&mut VxlanPacket::new_unchecked(&mut hdr[8..]));
        let template = Template::new(self.cfg.local, remote, IpNumber::UDP, self.cfg.ttl, &hdr);
        self.tunnels.push(VxTunnel {
            remote,
            vni,
            template,
            stats: VxlanStats::default(),
        });
        self.index.insert((remote, vni), n);
        Ok(TunnelId(n))
    }

    /// The tunnel to `remote` for `vni`.
    pub fn lookup(&self, remote: IpAddr, vni: u32) -> Option<TunnelId> {
        self.index.get(&(remote, vni)).map(TunnelId)
    }

    /// The remote address and VNI of a tunnel.
    pub fn tunnel(&self, id: TunnelId) -> Option<(IpAddr, u32)> {
        self.tunnels.get(id.0 as usize).map(|t| (t.remote, t.vni))
    }

    /// The tunnel's counters.
    pub fn stats(&self, id: TunnelId) -> Option<VxlanStats> {
        self.tunnels.get(id.0 as usize).map(|t| t.stats)
    }

    /// Drops counted by this endpoint, by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Headroom [`encap`](Self::encap) needs: 36 bytes over IPv4, 56 over IPv6.
    pub fn overhead(&self) -> usize {
        if self.cfg.local.is_ipv4() { 36 } else { 56 }
    }

    /// Encapsulates the Ethernet frame in `buf` for tunnel `id`: pushes VXLAN, UDP and the
    /// outer IP header. The UDP source port comes from a hash of the inner flow, in
    /// 49152..=65535 (RFC 7348 §5), so that the underlay spreads flows over its paths.
    pub fn encap<B: PacketBuf>(&mut self, id: TunnelId, buf: &mut B) -> Encap {
        let Some(t) = self.tunnels.get_mut(id.0 as usize) else {
            return Encap::Drop(count(&mut self.drops, DropReason::UnknownTunnel));
        };
        let len = buf.len();
        if len > self.cfg.mtu {
            t.stats.too_big += 1;
            return Encap::Drop(count(&mut self.drops, DropReason::TooBig));
        }
        if len < 14 {
            return Encap::Drop(count(&mut self.drops, DropReason::Truncated));
        }
        let sport = source_port(buf.data());
        let total = t.template.len + len;
        let ip_len = t.template.ip_len;
        let Ok(hdr) = buf.push_front(t.template.len) else {
            return Encap::Drop(count(&mut self.drops, DropReason::NoRoom));
        };
        hdr.copy_from_slice(t.template.header());
        t.template.patch_len(hdr, total);
        let udp_len = (total - ip_len) as u16;
        hdr[ip_len..ip_len + 2].copy_from_slice(&sport.to_be_bytes());
        hdr[ip_len + 4..ip_len + 6].copy_from_slice(&udp_len.to_be_bytes());
        if self.cfg.udp_checksum_v4 || !self.cfg.local.is_ipv4() {
            let pseudo = t.template.pseudo(usize::from(udp_len));
            let udp = buf.data_mut().get_mut(ip_len..).unwrap_or(&mut []);
            let mut c = !checksum::fold(checksum::sum(pseudo, udp));
            if c == 0 {
                // RFC 768: a computed zero is sent as all ones.
                c = 0xffff;
            }
            if let Some(f) = udp.get_mut(6..8) {
                f.copy_from_slice(&c.to_be_bytes());
            }
        }
        t.stats.tx_packets += 1;
        t.stats.tx_bytes += len as u64;
        Encap::Ready
    }

    /// Pushes only the VXLAN header, for sending through a UDP socket to the tunnel's remote
    /// address and [`VtepConfig::port`] (the socket adds UDP and IP).
    pub fn encap_udp_payload<B: PacketBuf>(&mut self, id: TunnelId, buf: &mut B) -> Encap {
        let Some(t) = self.tunnels.get_mut(id.0 as usize) else {
            return Encap::Drop(count(&mut self.drops, DropReason::UnknownTunnel));
        };
        let len = buf.len();
        if len > self.cfg.mtu {
            t.stats.too_big += 1;
            return Encap::Drop(count(&mut self.drops, DropReason::TooBig));
        }
        let Ok(hdr) = buf.push_front(8) else {
            return Encap::Drop(count(&mut self.drops, DropReason::NoRoom));
        };
        let at = t.template.ip_len + 8;
        hdr.copy_from_slice(&t.template.header()[at..at + 8]);
        t.stats.tx_packets += 1;
        t.stats.tx_bytes += len as u64;
        Encap::Ready
    }

    /// Decapsulates the outer IP packet in `buf` (IP, UDP to our port, VXLAN). On
    /// [`Decap::Packet`] the buffer holds the inner Ethernet frame.
    pub fn decap<B: PacketBuf>(&mut self, buf: &mut B) -> Decap {
        let o = match outer::parse(buf.data()) {
            Ok(o) => o,
            Err(r) => return Decap::Drop(count(&mut self.drops, r)),
        };
        if o.proto != IpNumber::UDP.0 || o.dst != self.cfg.local {
            return Decap::Drop(count(&mut self.drops, DropReason::Unsupported));
        }
        buf.truncate(o.header_len + o.payload_len);
        let data = buf.data();
        let Some(udp) = data.get(o.header_len..o.header_len + 8) else {
            return Decap::Drop(count(&mut self.drops, DropReason::Truncated));
        };
        let dport = u16::from_be_bytes([udp[2], udp[3]]);
        let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
        let csum = u16::from_be_bytes([udp[6], udp[7]]);
        if dport != self.cfg.port {
            return Decap::Drop(count(&mut self.drops, DropReason::Unsupported));
        }
        if ulen < 8 || ulen > o.payload_len {
            return Decap::Drop(count(&mut self.drops, DropReason::Malformed));
        }
        let seg = &data[o.header_len..o.header_len + ulen];
        // A zero checksum means none (IPv4; and IPv6 tunnels, RFC 6935).
        if csum != 0 {
            let pseudo = match (o.src, o.dst) {
                (IpAddr::V4(s), IpAddr::V4(d)) => {
                    checksum::pseudo_v4(s.octets(), d.octets(), 17, ulen as u16)
                }
                (s, d) => {
                    checksum::pseudo_v6(outer::v6_octets(s), outer::v6_octets(d), 17, ulen as u32)
                }
            };
            if checksum::fold(checksum::sum(pseudo, seg)) != 0xffff {
                return Decap::Drop(count(&mut self.drops, DropReason::BadChecksum));
            }
        }
        buf.truncate(o.header_len + ulen);
        if buf.pull_front(o.header_len + 8).is_err() {
            return Decap::Drop(count(&mut self.drops, DropReason::Truncated));
        }
        self.decap_udp_payload(buf, o.src)
    }

    /// Decapsulates a UDP payload (VXLAN header and frame) received from `remote`, as a UDP
    /// socket delivers it.
    pub fn decap_udp_payload<B: PacketBuf>(&mut self, buf: &mut B, remote: IpAddr) -> Decap {
        let repr = match VxlanRepr::parse(&VxlanPacket::new_unchecked(buf.data())) {
            Ok(r) => r,
            Err(e) => return Decap::Drop(count(&mut self.drops, e.drop_reason())),
        };
        let Some(n) = self.index.find((remote, repr.vni)) else {
            return Decap::Drop(count(&mut self.drops, DropReason::UnknownTunnel));
        };
        if buf.pull_front(8).is_err() || buf.len() < 14 {
            return Decap::Drop(count(&mut self.drops, DropReason::Truncated));
        }
        if let Some(t) = self.tunnels.get_mut(n as usize) {
            t.stats.rx_packets += 1;
            t.stats.rx_bytes += buf.len() as u64;
        }
        Decap::Packet {
            tunnel: TunnelId(n),
            protocol: protocol::TEB,
        }
    }
}

/// The UDP source port for an inner Ethernet frame: a hash of its IP flow (addresses,
/// protocol, and ports for TCP, UDP, SCTP, DCCP and UDP-Lite when the packet is not a
/// fragment) so that a flow keeps one underlay path, or of its Ethernet header when it carries
/// no IP; mapped into the dynamic range 49152..=65535 (RFC 7348 §5). The fields are read at
/// fixed offsets, without a full parse: this runs for every encapsulated frame.
pub fn source_port(frame: &[u8]) -> u16 {
    49152 + (flow_hash(frame) % 16384) as u16
}

fn flow_hash(frame: &[u8]) -> u32 {
    const PORTS: [u8; 5] = [6, 17, 33, 132, 136];
    let mut h: u32 = 0x811c_9dc5;
    let mut eat = |bytes: &[u8]| {
        for &x in bytes {
            h = (h ^ u32::from(x)).wrapping_mul(0x0100_0193);
        }
    };
    let (ethertype, l3) = match frame.get(12..14) {
        Some([0x81, 0x00]) => (frame.get(16..18), 18),
        et => (et, 14),
    };
    let ip = match ethertype {
        Some([0x08, 0x00]) => frame.get(l3..l3 + 20).map(|ip| {
            let ihl = usize::from(ip[0] & 0x0f) * 4;
            let fragment = u16::from_be_bytes([ip[6], ip[7]]) & 0x3fff != 0;
            eat(&ip[12..20]);
            eat(&[ip[9]]);
            (ip[9], l3 + ihl, fragment)
        }),
        Some([0x86, 0xdd]) => frame.get(l3..l3 + 40).map(|ip| {
            eat(&ip[8..40]);
            eat(&[ip[6]]);
            (ip[6], l3 + 40, false)
        }),
        _ => None,
    };
    match ip {
        Some((proto, l4, false)) if PORTS.contains(&proto) => {
            eat(frame.get(l4..l4 + 4).unwrap_or(&[]));
        }
        Some(_) => {}
        None => eat(frame.get(..14).unwrap_or(frame)),
    }
    // murmur3's finaliser, for avalanche into the low bits taken above.
    h ^= h >> 16;
    h = h.wrapping_mul(0x85eb_ca6b);
    h ^= h >> 13;
    h = h.wrapping_mul(0xc2b2_ae35);
    h ^ (h >> 16)
}
