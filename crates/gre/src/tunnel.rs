//! GRE tunnels: encapsulation and decapsulation in place, over IPv4 and IPv6, of IPv4, IPv6
//! and Ethernet (Transparent Ethernet Bridging) payloads.

use crate::gre::{GrePacket, GreRepr, protocol};
use crate::mtu::{self, IcmpSource};
use crate::outer::{self, Template};
use crate::{ConfigError, Decap, Encap, TunnelId, TunnelIndex, count};
use core::net::IpAddr;
use core::time::Duration;
use etherparse::{IpNumber, Ipv4Header, Ipv6FlowLabel, Ipv6Header};
use gatekit_packet::{DropCounters, DropReason, Instant, PacketBuf};

/// What a GRE tunnel carries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum GreMode {
    /// IPv4 and IPv6 packets (protocol 0x0800 / 0x86DD, picked from the IP version).
    #[default]
    L3,
    /// Ethernet frames: Transparent Ethernet Bridging (protocol 0x6558).
    Ethernet,
}

/// GRE keepalives as routers send them (the de facto Cisco scheme, not in an RFC): every
/// `interval` the tunnel sends its peer a GRE packet holding a GRE packet addressed back to
/// itself; the peer decapsulates and routes the inner packet home. After `retries`
/// unanswered probes in a row the tunnel is down, and comes up at the next answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// Time between probes.
    pub interval: Duration,
    /// Unanswered probes before the tunnel is declared down.
    pub retries: u32,
}

impl Default for Keepalive {
    fn default() -> Self {
        Keepalive {
            interval: Duration::from_secs(10),
            retries: 3,
        }
    }
}

/// One GRE tunnel, identified by (local, remote, key).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GreTunnelConfig {
    /// Our outer address.
    pub local: IpAddr,
    /// The peer's outer address.
    pub remote: IpAddr,
    /// The key (RFC 2890 §2.1), sent and required on receive.
    pub key: Option<u32>,
    /// What the tunnel carries.
    pub mode: GreMode,
    /// Send checksums (RFC 2784 §2.5). Received checksums are always verified.
    pub checksum: bool,
    /// Send sequence numbers (RFC 2890 §2.2).
    pub sequence: bool,
    /// Require sequence numbers on receive and drop packets out of order (and counts them).
    pub check_sequence: bool,
    /// Outer TTL / hop limit.
    pub ttl: u8,
    /// Largest payload carried: the inner IP packet (L3) or the whole inner Ethernet frame
    /// (Ethernet). Larger ones are dropped and counted (and answered with an ICMP error in L3
    /// mode).
    pub mtu: usize,
    /// Clamp the MSS of TCP SYNs crossing the tunnel (both ways) to fit the MTU (L3 only).
    pub mss_clamp: bool,
    /// Keepalives, if any.
    pub keepalive: Option<Keepalive>,
    /// Source of ICMP errors; defaults to `local` for its own family.
    pub icmp_source: IcmpSource,
}

impl GreTunnelConfig {
    /// An L3 tunnel with no key, no checksum, no sequence numbers, TTL 64 and the MTU that a
    /// 1500-byte underlay leaves (1476 over IPv4, 1456 over IPv6).
    pub fn new(local: IpAddr, remote: IpAddr) -> Self {
        let outer = if local.is_ipv4() { 20 } else { 40 };
        GreTunnelConfig {
            local,
            remote,
            key: None,
            mode: GreMode::L3,
            checksum: false,
            sequence: false,
            check_sequence: false,
            ttl: 64,
            mtu: 1500 - outer - 4,
            mss_clamp: false,
            keepalive: None,
            icmp_source: IcmpSource::default(),
        }
    }

    /// The GRE header length this tunnel sends.
    pub fn gre_len(&self) -> usize {
        self.repr(0, None).buffer_len()
    }

    fn repr(&self, protocol: u16, seq: Option<u32>) -> GreRepr {
        GreRepr {
            protocol,
            checksum: self.checksum,
            key: self.key,
            seq: if self.sequence { seq.or(Some(0)) } else { None },
        }
    }
}

/// Counters of one tunnel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct TunnelStats {
    /// Packets encapsulated.
    pub tx_packets: u64,
    /// Payload bytes encapsulated.
    pub tx_bytes: u64,
    /// Packets decapsulated and delivered.
    pub rx_packets: u64,
    /// Payload bytes decapsulated and delivered.
    pub rx_bytes: u64,
    /// Packets too big for the MTU (dropped).
    pub too_big: u64,
    /// ICMP errors generated for them.
    pub icmp_errors: u64,
    /// Received packets dropped as out of order or duplicate.
    pub out_of_order: u64,
    /// TCP SYNs whose MSS was clamped.
    pub mss_clamped: u64,
    /// Keepalive probes sent.
    pub keepalives_sent: u64,
    /// Keepalive answers received.
    pub keepalives_received: u64,
    /// Peer probes reflected back.
    pub keepalives_reflected: u64,
}

#[derive(Debug, Clone)]
struct KeepaliveState {
    cfg: Keepalive,
    next: Instant,
    unanswered: u32,
    up: bool,
    due: bool,
}

#[derive(Debug, Clone)]
struct Tunnel {
    cfg: GreTunnelConfig,
    /// Outer IP header and GRE header (protocol 0, no seq/checksum values).
    template: Template,
    /// Offset of the protocol field and of the sequence number in the template.
    seq_at: usize,
    tx_seq: u32,
    rx_seq: Option<u32>,
    keepalive: Option<KeepaliveState>,
    stats: TunnelStats,
}

/// What identifies a tunnel: (local, remote, key).
type TunnelKey = (IpAddr, IpAddr, Option<u32>);

/// A set of GRE tunnels sharing the data path: the sans-IO GRE stage.
///
/// [`encap`](Self::encap) takes a packet for a tunnel and pushes the GRE and outer IP headers
/// in front of it; [`decap`](Self::decap) takes a received outer IP packet, finds its tunnel
/// by (local, remote, key), checks it and pulls the headers off. Neither copies the payload
/// nor allocates.
#[derive(Debug, Default)]
pub struct GreEndpoint {
    tunnels: Vec<Tunnel>,
    index: TunnelIndex<TunnelKey>,
    drops: DropCounters,
}

impl GreEndpoint {
    /// An endpoint with no tunnels.
    pub fn new() -> Self {
        GreEndpoint::default()
    }

    /// Adds a tunnel; fails on mixed address families, a duplicate (local, remote, key), an
    /// MTU out of range or a zero keepalive interval.
    pub fn add_tunnel(&mut self, cfg: GreTunnelConfig) -> Result<TunnelId, ConfigError> {
        if cfg.local.is_ipv4() != cfg.remote.is_ipv4() {
            return Err(ConfigError::MixedFamilies {
                local: cfg.local,
                remote: cfg.remote,
            });
        }
        let id = (cfg.local, cfg.remote, cfg.key);
        if self.index.contains(&id) {
            return Err(ConfigError::Duplicate {
                local: cfg.local,
                remote: cfg.remote,
                key: cfg.key,
            });
        }
        let outer_len = if cfg.local.is_ipv4() { 20 } else { 40 };
        let (min, max) = (68, 65535 - outer_len - cfg.gre_len());
        if cfg.mtu < min || cfg.mtu > max {
            return Err(ConfigError::Mtu {
                mtu: cfg.mtu,
                min,
                max,
            });
        }
        if let Some(ka) = cfg.keepalive
            && ka.interval.is_zero()
        {
            return Err(ConfigError::Keepalive {
                why: "interval must not be zero",
            });
        }
        let n = u32::try_from(self.tunnels.len())
            .map_err(|_| ConfigError::NoSuchTunnel { id: u32::MAX })?;
        let repr = cfg.repr(0, None);
        let mut gre = [0u8; 16];
        let gre = &mut gre[..repr.buffer_len()];
        let _ = repr.emit(&mut GrePacket::new_unchecked(&mut *gre));
        if repr.checksum {
            // Computed per packet; the template holds zero there.
            gre[4..8].fill(0);
        }
        let template = Template::new(cfg.local, cfg.remote, IpNumber::GRE, cfg.ttl, gre);
        let seq_at = template.ip_len + repr.buffer_len() - 4;
        self.tunnels.push(Tunnel {
            keepalive: cfg.keepalive.map(|cfg| KeepaliveState {
                cfg,
                next: Instant::ZERO,
                unanswered: 0,
                up: true,
                due: false,
            }),
            cfg,
            template,
            seq_at,
            tx_seq: 0,
            rx_seq: None,
            stats: TunnelStats::default(),
        });
        self.index.insert(id, n);
        Ok(TunnelId(n))
    }

    /// The tunnel's configuration.
    pub fn config(&self, id: TunnelId) -> Option<&GreTunnelConfig> {
        self.tunnels.get(id.0 as usize).map(|t| &t.cfg)
    }

    /// The tunnel with this identity, as a received packet names it.
    pub fn lookup(&self, local: IpAddr, remote: IpAddr, key: Option<u32>) -> Option<TunnelId> {
        self.index.get(&(local, remote, key)).map(TunnelId)
    }

    /// The tunnel's counters.
    pub fn stats(&self, id: TunnelId) -> Option<TunnelStats> {
        self.tunnels.get(id.0 as usize).map(|t| t.stats)
    }

    /// Drops counted by this endpoint, by reason.
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    /// Whether the tunnel is up: always, without keepalives; with them, until `retries`
    /// probes in a row go unanswered.
    pub fn is_up(&self, id: TunnelId) -> bool {
        self.tunnels
            .get(id.0 as usize)
            .is_some_and(|t| t.keepalive.as_ref().is_none_or(|k| k.up))
    }

    /// Bytes of headroom [`encap`](Self::encap) needs for this tunnel.
    pub fn overhead(&self, id: TunnelId) -> usize {
        self.tunnels
            .get(id.0 as usize)
            .map_or(0, |t| t.template.len)
    }

    /// Encapsulates the packet in `buf` (an IP packet, or an Ethernet frame in Ethernet
    /// mode) for tunnel `id`: on [`Encap::Ready`] the buffer holds the outer IP packet to send
    /// to the tunnel's remote address.
    ///
    /// A packet larger than the MTU is dropped and counted ([`DropReason::TooBig`]); in L3
    /// mode the buffer is then rewritten, when allowed, into the ICMP error for its sender
    /// ([`Encap::IcmpError`]), to be routed like a locally generated packet.
    pub fn encap<B: PacketBuf>(&mut self, id: TunnelId, buf: &mut B) -> Encap {
        let Some(t) = self.tunnels.get_mut(id.0 as usize) else {
            return Encap::Drop(count(&mut self.drops, DropReason::UnknownTunnel));
        };
        if t.keepalive.as_ref().is_some_and(|k| !k.up) {
            return Encap::Drop(count(&mut self.drops, DropReason::PortDown));
        }
        let proto = match t.cfg.mode {
            GreMode::Ethernet => protocol::TEB,
            GreMode::L3 => match buf.data().first().map(|b| b >> 4) {
                Some(4) => protocol::IPV4,
                Some(6) => protocol::IPV6,
                _ => return Encap::Drop(count(&mut self.drops, DropReason::Malformed)),
            },
        };
        if buf.len() > t.cfg.mtu {
            t.stats.too_big += 1;
            self.drops.add(DropReason::TooBig, 1);
            if t.cfg.mode == GreMode::L3 {
                let src = mtu::icmp_source(t.cfg.icmp_source, t.cfg.local);
                if mtu::too_big_in_place(buf, t.cfg.mtu, src) {
                    t.stats.icmp_errors += 1;
                    return Encap::IcmpError;
                }
            }
            return Encap::Drop(DropReason::TooBig);
        }
        if t.cfg.mss_clamp
            && t.cfg.mode == GreMode::L3
            && mtu::clamp_mss(
                buf.data_mut(),
                mtu::mss_for(t.cfg.mtu, proto == protocol::IPV6),
            )
        {
            t.stats.mss_clamped += 1;
        }
        let len = buf.len();
        if push(t, buf, proto).is_err() {
            return Encap::Drop(count(&mut self.drops, DropReason::NoRoom));
        }
        t.stats.tx_packets += 1;
        t.stats.tx_bytes += len as u64;
        Encap::Ready
    }

    /// Decapsulates the outer IP packet in `buf` (outer header included, as a raw socket
    /// delivers IPv4). On [`Decap::Packet`] the buffer holds the payload: an IP packet or an
    /// Ethernet frame, as `protocol` says.
    pub fn decap<B: PacketBuf>(&mut self, buf: &mut B) -> Decap {
        let o = match outer::parse(buf.data()) {
            Ok(o) => o,
            Err(r) => return Decap::Drop(count(&mut self.drops, r)),
        };
        if o.proto != IpNumber::GRE.0 {
            return Decap::Drop(count(&mut self.drops, DropReason::Unsupported));
        }
        // Drop link-layer padding past the IP length, then the outer header.
        buf.truncate(o.header_len + o.payload_len);
        if buf.pull_front(o.header_len).is_err() {
            return Decap::Drop(count(&mut self.drops, DropReason::Truncated));
        }
        self.decap_gre(buf, o.src, o.dst)
    }

    /// Decapsulates a GRE packet whose outer IP header is already gone (an IPv6 raw socket
    /// delivers no header): `src` and `dst` are the outer addresses.
    pub fn decap_gre<B: PacketBuf>(&mut self, buf: &mut B, src: IpAddr, dst: IpAddr) -> Decap {
        let repr = match GreRepr::parse(&GrePacket::new_unchecked(buf.data())) {
            Ok(r) => r,
            Err(e) => return Decap::Drop(count(&mut self.drops, e.drop_reason())),
        };
        let Some(n) = self.index.find((dst, src, repr.key)) else {
            return Decap::Drop(count(&mut self.drops, DropReason::UnknownTunnel));
        };
        let tunnel = TunnelId(n);
        let Some(t) = self.tunnels.get_mut(n as usize) else {
            return Decap::Drop(count(&mut self.drops, DropReason::UnknownTunnel));
        };
        // Keepalive answers are our own probes' inner packets: no sequence number of the
        // peer's stream, so they skip the check.
        let keepalive = repr.protocol == protocol::KEEPALIVE && buf.len() == repr.buffer_len();
        if t.cfg.check_sequence && !keepalive {
            let Some(seq) = repr.seq else {
                return Decap::Drop(count(&mut self.drops, DropReason::Malformed));
            };
            // RFC 2890 §2.2: a packet whose sequence number is not after the last one
            // delivered (serial number arithmetic, half the space ahead) is out of order and,
            // since this implementation does not buffer, dropped.
            if let Some(last) = t.rx_seq {
                let ahead = seq.wrapping_sub(last);
                if ahead == 0 || ahead >= 1 << 31 {
                    t.stats.out_of_order += 1;
                    return Decap::Drop(count(&mut self.drops, DropReason::OutOfOrder));
                }
            }
            t.rx_seq = Some(seq);
        }
        if buf.pull_front(repr.buffer_len()).is_err() {
            return Decap::Drop(count(&mut self.drops, DropReason::Truncated));
        }
        match repr.protocol {
            protocol::KEEPALIVE if keepalive => {
                t.stats.keepalives_received += 1;
                if let Some(k) = &mut t.keepalive {
                    k.unanswered = 0;
                    k.up = true;
                }
                self.drops.add(DropReason::Keepalive, 1);
                Decap::Keepalive { tunnel }
            }
            protocol::IPV4 | protocol::IPV6 if is_probe(&t.cfg, buf.data()) => {
                t.stats.keepalives_reflected += 1;
                Decap::Reflect { tunnel }
            }
            protocol::IPV4 | protocol::IPV6 if t.cfg.mode == GreMode::L3 => {
                if t.cfg.mss_clamp {
                    let v6 = repr.protocol == protocol::IPV6;
                    if mtu::clamp_mss(buf.data_mut(), mtu::mss_for(t.cfg.mtu, v6)) {
                        t.stats.mss_clamped += 1;
                    }
                }
                t.stats.rx_packets += 1;
                t.stats.rx_bytes += buf.len() as u64;
                Decap::Packet {
                    tunnel,
                    protocol: repr.protocol,
                }
            }
            protocol::TEB if t.cfg.mode == GreMode::Ethernet => {
                t.stats.rx_packets += 1;
                t.stats.rx_bytes += buf.len() as u64;
                Decap::Packet {
                    tunnel,
                    protocol: repr.protocol,
                }
            }
            _ => Decap::Drop(count(&mut self.drops, DropReason::Unsupported)),
        }
    }

    /// When [`handle_timeout`](Self::handle_timeout) is next due (keepalives), if ever.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.tunnels
            .iter()
            .filter_map(|t| t.keepalive.as_ref().map(|k| k.next))
            .min()
    }

    /// Runs keepalive timers due at `now`: marks probes to send (fetch them with
    /// [`poll_keepalive`](Self::poll_keepalive)) and takes down tunnels whose peer stopped
    /// answering.
    pub fn handle_timeout(&mut self, now: Instant) {
        for t in &mut self.tunnels {
            if let Some(k) = &mut t.keepalive
                && now >= k.next
            {
                if k.unanswered >= k.cfg.retries {
                    k.up = false;
                }
                k.unanswered = k.unanswered.saturating_add(1);
                k.due = true;
                k.next = now + k.cfg.interval;
            }
        }
    }

    /// Writes a keepalive probe that is due into `buf` (which should be empty, with headroom
    /// for two outer headers) and returns its tunnel; `None` when none is due. The buffer then
    /// holds an outer IP packet to send like any encapsulated one.
    pub fn poll_keepalive<B: PacketBuf>(&mut self, buf: &mut B) -> Option<TunnelId> {
        let (n, t) = self
            .tunnels
            .iter_mut()
            .enumerate()
            .find(|(_, t)| t.keepalive.as_ref().is_some_and(|k| k.due))?;
        if let Some(k) = &mut t.keepalive {
            k.due = false;
        }
        // The inner packet: remote -> local, GRE with protocol 0 and the tunnel's key.
        let inner_gre = GreRepr {
            protocol: protocol::KEEPALIVE,
            checksum: false,
            key: t.cfg.key,
            seq: None,
        };
        let glen = inner_gre.buffer_len();
        let ip = match (t.cfg.remote, t.cfg.local) {
            (IpAddr::V4(r), IpAddr::V4(l)) => {
                let mut h =
                    Ipv4Header::new(glen as u16, 255, IpNumber::GRE, r.octets(), l.octets())
                        .ok()?;
                h.header_checksum = h.calc_header_checksum();
                h.to_bytes().to_vec()
            }
            (r, l) => Ipv6Header {
                traffic_class: 0,
                flow_label: Ipv6FlowLabel::ZERO,
                payload_length: glen as u16,
                next_header: IpNumber::GRE,
                hop_limit: 255,
                source: outer::v6_octets(r),
                destination: outer::v6_octets(l),
            }
            .to_bytes()
            .to_vec(),
        };
        let proto = if t.cfg.local.is_ipv4() {
            protocol::IPV4
        } else {
            protocol::IPV6
        };
        let room = buf.push_back(ip.len() + glen).ok()?;
        room[..ip.len()].copy_from_slice(&ip);
        inner_gre
            .emit(&mut GrePacket::new_unchecked(&mut room[ip.len()..]))
            .ok()?;
        push(t, buf, proto).ok()?;
        t.stats.keepalives_sent += 1;
        Some(TunnelId(n as u32))
    }
}

/// Whether `inner` is a keepalive probe of the peer: an IP packet from our local address to
/// the peer's, carrying GRE.
fn is_probe(cfg: &GreTunnelConfig, inner: &[u8]) -> bool {
    // Cheap test of the protocol field first: almost every packet is not one.
    let proto = match inner.first().map(|b| b >> 4) {
        Some(4) => inner.get(9),
        Some(6) => inner.get(6),
        _ => None,
    };
    if proto != Some(&IpNumber::GRE.0) {
        return false;
    }
    match outer::parse(inner) {
        Ok(o) => o.proto == IpNumber::GRE.0 && o.src == cfg.local && o.dst == cfg.remote,
        Err(_) => false,
    }
}

/// Pushes the tunnel's outer IP and GRE headers in front of `buf`.
#[inline]
fn push<B: PacketBuf>(t: &mut Tunnel, buf: &mut B, proto: u16) -> Result<(), ()> {
    let len = buf.len();
    let total = t.template.len + len;
    if total > usize::from(u16::MAX) {
        return Err(());
    }
    let hdr = buf.push_front(t.template.len).map_err(|_| ())?;
    hdr.copy_from_slice(t.template.header());
    t.template.patch_len(hdr, total);
    let ip_len = t.template.ip_len;
    hdr[ip_len + 2..ip_len + 4].copy_from_slice(&proto.to_be_bytes());
    if t.cfg.sequence {
        hdr[t.seq_at..t.seq_at + 4].copy_from_slice(&t.tx_seq.to_be_bytes());
        t.tx_seq = t.tx_seq.wrapping_add(1);
    }
    if t.cfg.checksum {
        let gre = buf.data_mut().get_mut(ip_len..).ok_or(())?;
        GrePacket::new_unchecked(gre).fill_checksum();
    }
    Ok(())
}
