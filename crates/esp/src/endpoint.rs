//! The ESP endpoint: the SAD (inbound SAs by SPI), the SPD (outbound SAs by traffic selector
//! or by tunnel), encapsulation, decapsulation, NAT-T demultiplexing, keepalives, lifetimes.

use crate::ConfigError;
use crate::ip::{self, IPPROTO_UDP, IPV4_HDR, IPV6_HDR, UDP_HDR};
use crate::sa::{
    Direction, ESP_PREFIX_LEN, Encap, Mode, SaConfig, SaState, SecurityAssociation, TunnelId,
};
use crate::wire::{IPPROTO_ESP, NAT_KEEPALIVE, NAT_T_PORT, UdpPayloadKind, classify_udp_payload};
use core::hash::{BuildHasherDefault, Hasher};
use core::net::IpAddr;
use core::time::Duration;
use gatekit_packet::{Batch, DropCounters, DropReason, FlowKey, Instant, PacketBuf};
use std::collections::{HashMap, VecDeque};

/// TCP's IP protocol number.
const IPPROTO_TCP: u8 = 6;

/// IKE's own port (RFC 7296 §2): IKE without the non-ESP marker.
const IKE_PORT: u16 = 500;
/// IP protocol numbers ESP's next header may name in tunnel mode.
const NH_IPV4: u8 = 4;
const NH_IPV6: u8 = 41;
/// RFC 4303 §2.6: a dummy packet, to be discarded.
const NH_NONE: u8 = 59;

/// A handle to an SA in an [`Endpoint`]. Stale handles (of removed SAs) are refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SaId {
    index: u32,
    generation: u32,
}

/// Which outbound SA carries a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Select {
    /// This SA.
    Sa(SaId),
    /// The SA bound to this route-based tunnel.
    Tunnel(TunnelId),
    /// The first SA (in the order added) whose traffic selectors match the packet.
    Policy,
}

/// What [`Endpoint::encap`] leaves in the buffer.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Output {
    /// A complete outer packet: IPv4/IPv6, then UDP for NAT-T SAs, then ESP. For a raw IP
    /// socket (`IP_HDRINCL`) or a TUN/packet port.
    #[default]
    Packet,
    /// The ESP packet only: for a UDP socket bound to the SA's local port (NAT-T) or a raw
    /// `IPPROTO_ESP` socket, which add their own headers.
    Payload,
}

/// What was sealed, and where it goes.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Encapped {
    /// The SA used.
    pub sa: SaId,
    /// Its SPI.
    pub spi: u32,
    /// The sequence number sent.
    pub seq: u64,
    /// Our outer address.
    pub local: IpAddr,
    /// The peer's outer address.
    pub peer: IpAddr,
    /// Native, or UDP with the ports to send from and to.
    pub encap: Encap,
}

/// Where a decapsulated packet came from.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Decapped {
    /// The inbound SA.
    pub sa: SaId,
    /// Its SPI.
    pub spi: u32,
    /// The full sequence number.
    pub seq: u64,
    /// The next header of the ESP trailer: 4 or 41 in tunnel mode, the upper protocol in
    /// transport mode.
    pub next_header: u8,
    /// The SA's mode.
    pub mode: Mode,
    /// The route-based tunnel the SA is bound to.
    pub tunnel: Option<TunnelId>,
}

/// The verdict of a decapsulation.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decap {
    /// The buffer now holds the inner packet: an IP packet in tunnel mode (and in transport
    /// mode given a whole outer packet), the upper-layer payload in transport mode given an
    /// ESP payload.
    Inner(Decapped),
    /// An authentic dummy packet (next header 59, RFC 4303 §2.6): nothing to deliver.
    Dummy(Decapped),
    /// IKE: on port 4500 behind the 4-byte non-ESP marker, or on port 500. The buffer is
    /// unchanged.
    Ike,
    /// A NAT keepalive (counted as [`DropReason::Keepalive`]).
    Keepalive,
    /// Dropped, and counted, for this reason.
    Drop(DropReason),
}

/// Something the control plane should hear about.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Event {
    /// The SA passed a soft lifetime: negotiate a replacement.
    SoftExpired {
        /// The SA.
        sa: SaId,
        /// Its SPI.
        spi: u32,
        /// Its direction.
        direction: Direction,
    },
    /// The SA passed a hard lifetime or ran out of sequence numbers: it drops everything.
    HardExpired {
        /// The SA.
        sa: SaId,
        /// Its SPI.
        spi: u32,
        /// Its direction.
        direction: Direction,
    },
    /// A replaced inbound SA reached the end of its grace period and was removed.
    Retired {
        /// Its SPI.
        spi: u32,
    },
}

/// A NAT keepalive to send (RFC 3948 §2.3): one byte, 0xFF, from `local_port` to
/// `peer:peer_port`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Keepalive {
    /// The outbound SA it keeps alive.
    pub sa: SaId,
    /// Our address.
    pub local: IpAddr,
    /// Our port.
    pub local_port: u16,
    /// The peer's address.
    pub peer: IpAddr,
    /// The peer's port.
    pub peer_port: u16,
}

/// Settings of an [`Endpoint`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EndpointConfig {
    /// UDP ports on which whole outer packets given to [`Endpoint::decap_ip`] are taken as
    /// NAT-T (4500 by default); the local ports of UDP-encapsulated SAs are added.
    pub nat_t_ports: Vec<u16>,
}

impl Default for EndpointConfig {
    fn default() -> Self {
        EndpointConfig {
            nat_t_ports: vec![NAT_T_PORT],
        }
    }
}

/// SPIs are chosen at random by the receiver, so they hash themselves: one multiply spreads
/// them over the table (and sequential SPIs from a test or a weak generator too).
#[derive(Default)]
pub(crate) struct SpiHasher(u64);

impl Hasher for SpiHasher {
    fn finish(&self) -> u64 {
        self.0
    }
    fn write(&mut self, bytes: &[u8]) {
        for b in bytes {
            self.0 = (self.0 << 8 | u64::from(*b)).wrapping_mul(0x9e37_79b9_7f4a_7c15);
        }
    }
    fn write_u32(&mut self, n: u32) {
        self.0 = u64::from(n).wrapping_mul(0x9e37_79b9_7f4a_7c15);
    }
}

type SpiMap<V> = HashMap<u32, V, BuildHasherDefault<SpiHasher>>;

struct Slot {
    generation: u32,
    sa: Option<SecurityAssociation>,
}

/// An IPsec ESP endpoint: its SAs, its policies, and the data path through them.
///
/// Sans-IO: it never touches a socket or a clock. Feed it packets with `now`, call
/// [`handle_timeout`](Self::handle_timeout) when [`poll_timeout`](Self::poll_timeout) says,
/// and collect [`Event`]s and [`Keepalive`]s.
///
/// One endpoint belongs to one worker: its outbound SAs count sequence numbers, its inbound
/// SAs keep replay windows. A multi-core gateway steers each SA's traffic to one worker.
pub struct Endpoint {
    slots: Vec<Slot>,
    free: Vec<u32>,
    inbound: SpiMap<SaId>,
    policies: Vec<SaId>,
    routes: HashMap<TunnelId, SaId>,
    nat_t_ports: Vec<u16>,
    drops: DropCounters,
    events: VecDeque<Event>,
    keepalives: VecDeque<Keepalive>,
    ip_id: u16,
}

impl core::fmt::Debug for Endpoint {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("Endpoint")
            .field("sas", &self.iter().count())
            .field("inbound", &self.inbound.len())
            .field("policies", &self.policies.len())
            .field("routes", &self.routes.len())
            .field("drops", &self.drops.total())
            .finish_non_exhaustive()
    }
}

impl Default for Endpoint {
    fn default() -> Self {
        Endpoint::new(EndpointConfig::default())
    }
}

impl Endpoint {
    /// An endpoint with no SAs.
    pub fn new(cfg: EndpointConfig) -> Self {
        Endpoint {
            slots: Vec::new(),
            free: Vec::new(),
            inbound: SpiMap::default(),
            policies: Vec::new(),
            routes: HashMap::new(),
            nat_t_ports: cfg.nat_t_ports,
            drops: DropCounters::default(),
            events: VecDeque::new(),
            keepalives: VecDeque::new(),
            ip_id: 0,
        }
    }

    // ---- the SAD and SPD ----

    /// Adds an SA. Inbound SAs are found by SPI; outbound SAs by their selectors (in the order
    /// added), by their tunnel, or by the returned id.
    pub fn add_sa(&mut self, cfg: &SaConfig, now: Instant) -> Result<SaId, ConfigError> {
        let sa = SecurityAssociation::new(cfg, now)?;
        match cfg.direction {
            Direction::Inbound if self.inbound.contains_key(&cfg.spi) => {
                return Err(ConfigError::DuplicateSpi { spi: cfg.spi });
            }
            Direction::Outbound => {
                if let Some(t) = cfg.tunnel
                    && self.routes.contains_key(&t)
                {
                    return Err(ConfigError::DuplicateTunnel { tunnel: t });
                }
            }
            Direction::Inbound => {}
        }
        let id = self.insert(sa);
        self.bind(id, cfg);
        Ok(id)
    }

    fn insert(&mut self, sa: SecurityAssociation) -> SaId {
        if let Encap::Udp { local_port, .. } = sa.encap
            && !self.nat_t_ports.contains(&local_port)
        {
            self.nat_t_ports.push(local_port);
        }
        match self.free.pop() {
            Some(index) => {
                let slot = &mut self.slots[index as usize];
                slot.sa = Some(sa);
                SaId {
                    index,
                    generation: slot.generation,
                }
            }
            None => {
                self.slots.push(Slot {
                    generation: 0,
                    sa: Some(sa),
                });
                SaId {
                    index: (self.slots.len() - 1) as u32,
                    generation: 0,
                }
            }
        }
    }

    fn bind(&mut self, id: SaId, cfg: &SaConfig) {
        match cfg.direction {
            Direction::Inbound => {
                self.inbound.insert(cfg.spi, id);
            }
            Direction::Outbound => {
                if let Some(t) = cfg.tunnel {
                    self.routes.insert(t, id);
                }
                if !cfg.selectors.is_empty() {
                    self.policies.push(id);
                }
            }
        }
    }

    /// Removes an SA at once.
    pub fn remove_sa(&mut self, id: SaId) -> Result<(), ConfigError> {
        let sa = self.take(id)?;
        if sa.direction == Direction::Inbound && self.inbound.get(&sa.spi) == Some(&id) {
            self.inbound.remove(&sa.spi);
        }
        self.routes.retain(|_, v| *v != id);
        self.policies.retain(|v| *v != id);
        Ok(())
    }

    fn take(&mut self, id: SaId) -> Result<SecurityAssociation, ConfigError> {
        let slot = self
            .slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .ok_or(ConfigError::UnknownSa(id))?;
        let sa = slot.sa.take().ok_or(ConfigError::UnknownSa(id))?;
        slot.generation = slot.generation.wrapping_add(1);
        self.free.push(id.index);
        Ok(sa)
    }

    /// Replaces an outbound SA by a new one in one step: the new SA takes the old one's
    /// tunnel and place among the policies, and the old one is removed. No packet sees
    /// neither.
    pub fn rekey_outbound(
        &mut self,
        old: SaId,
        new: &SaConfig,
        now: Instant,
    ) -> Result<SaId, ConfigError> {
        let old_sa = self.sa(old).ok_or(ConfigError::UnknownSa(old))?;
        if old_sa.direction != Direction::Outbound || new.direction != Direction::Outbound {
            return Err(ConfigError::WrongDirection { spi: new.spi });
        }
        let sa = SecurityAssociation::new(new, now)?;
        if let Some(t) = new.tunnel
            && self.routes.get(&t).is_some_and(|v| *v != old)
        {
            return Err(ConfigError::DuplicateTunnel { tunnel: t });
        }
        let id = self.insert(sa);
        // In place in the policy list, so the order of precedence is kept.
        let pos = self.policies.iter().position(|v| *v == old);
        self.routes.retain(|_, v| *v != old);
        self.policies.retain(|v| *v != old);
        if let Some(t) = new.tunnel {
            self.routes.insert(t, id);
        }
        if !new.selectors.is_empty() {
            let at = pos.unwrap_or(self.policies.len()).min(self.policies.len());
            self.policies.insert(at, id);
        }
        self.take(old)?;
        Ok(id)
    }

    /// Adds the inbound SA that replaces the one with `old_spi`, and keeps the old one for
    /// `grace` so packets already in flight under it are still accepted (then
    /// [`Event::Retired`]).
    pub fn rekey_inbound(
        &mut self,
        old_spi: u32,
        new: &SaConfig,
        grace: Duration,
        now: Instant,
    ) -> Result<SaId, ConfigError> {
        let old = *self
            .inbound
            .get(&old_spi)
            .ok_or(ConfigError::UnknownSpi { spi: old_spi })?;
        if new.direction != Direction::Inbound {
            return Err(ConfigError::WrongDirection { spi: new.spi });
        }
        let id = self.add_sa(new, now)?;
        if let Some(sa) = self.sa_mut(old) {
            sa.retire_at = Some(now + grace);
        }
        Ok(id)
    }

    /// The SA behind a handle.
    pub fn sa(&self, id: SaId) -> Option<&SecurityAssociation> {
        self.slots
            .get(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.sa.as_ref())
    }

    #[inline]
    fn sa_mut(&mut self, id: SaId) -> Option<&mut SecurityAssociation> {
        self.slots
            .get_mut(id.index as usize)
            .filter(|s| s.generation == id.generation)
            .and_then(|s| s.sa.as_mut())
    }

    /// Every SA with its handle.
    pub fn iter(&self) -> impl Iterator<Item = (SaId, &SecurityAssociation)> {
        self.slots.iter().enumerate().filter_map(|(i, s)| {
            s.sa.as_ref().map(|sa| {
                (
                    SaId {
                        index: i as u32,
                        generation: s.generation,
                    },
                    sa,
                )
            })
        })
    }

    /// The inbound SA with this SPI (O(1)).
    pub fn inbound(&self, spi: u32) -> Option<SaId> {
        self.inbound.get(&spi).copied()
    }

    /// The outbound SA bound to a tunnel.
    pub fn route(&self, tunnel: TunnelId) -> Option<SaId> {
        self.routes.get(&tunnel).copied()
    }

    /// The first outbound SA whose selectors match an outgoing packet's flow.
    pub fn lookup_policy(&self, key: &FlowKey) -> Option<SaId> {
        self.lookup_policy_among(&self.policies, key)
    }

    /// The first of `ids` (outbound SAs, in the order given) whose selectors match an
    /// outgoing packet's flow: route-based selection, where the routing table has already
    /// chosen the peer and the peer's SAs only have to agree on the flow.
    pub fn lookup_policy_among(&self, ids: &[SaId], key: &FlowKey) -> Option<SaId> {
        ids.iter().copied().find(|id| {
            self.sa(*id).is_some_and(|sa| {
                sa.direction == Direction::Outbound
                    && sa.selectors.iter().any(|ts| ts.matches_outbound(key))
            })
        })
    }

    /// Every drop of the endpoint, by reason (the per-SA counts summed, plus the drops that
    /// have no SA: unknown SPI, malformed outer headers, keepalives).
    pub fn drops(&self) -> &DropCounters {
        &self.drops
    }

    #[inline]
    fn count(&mut self, reason: DropReason) -> DropReason {
        self.drops.add(reason, 1);
        reason
    }

    fn note_state(&mut self, id: SaId, now: Instant) {
        if let Some(sa) = self.sa_mut(id)
            && let Some(state) = sa.update_state(now)
        {
            let (spi, direction) = (sa.spi, sa.direction);
            self.push_state_event(id, spi, direction, state);
        }
    }

    fn push_state_event(&mut self, sa: SaId, spi: u32, direction: Direction, state: SaState) {
        self.events.push_back(match state {
            SaState::HardExpired => Event::HardExpired { sa, spi, direction },
            _ => Event::SoftExpired { sa, spi, direction },
        });
    }

    // ---- outbound ----

    /// Encapsulates the packet in `buf` in place through the selected SA: in tunnel mode the
    /// whole IP packet, in transport mode its payload. On a drop the reason is counted and
    /// the buffer holds what it held before.
    ///
    /// Room needed: 16 bytes of headroom for ESP, plus 8 for UDP and 20/40 for the outer IP
    /// header with [`Output::Packet`]; up to 21 bytes of tailroom.
    pub fn encap<B: PacketBuf + ?Sized>(
        &mut self,
        select: Select,
        buf: &mut B,
        output: Output,
        now: Instant,
    ) -> Result<Encapped, DropReason> {
        let id = match select {
            Select::Sa(id) => Some(id),
            Select::Tunnel(t) => self.route(t),
            Select::Policy => match FlowKey::from_ip(buf.data()) {
                Ok(key) => self.lookup_policy(&key),
                Err(_) => return Err(self.count(DropReason::Malformed)),
            },
        };
        let Some(id) = id else {
            return Err(self.count(DropReason::NoSa));
        };
        let ip_id = self.ip_id;
        let Some(sa) = self.sa_mut(id) else {
            return Err(self.count(DropReason::NoSa));
        };
        if sa.direction != Direction::Outbound {
            return Err(self.count(DropReason::NoSa));
        }
        let r = encap_with(sa, buf, output, ip_id, now);
        let (spi, local, peer, encap, direction) =
            (sa.spi, sa.local, sa.peer, sa.encap, sa.direction);
        let changed = sa.update_state(now);
        if let Some(state) = changed {
            self.push_state_event(id, spi, direction, state);
        }
        match r {
            Ok(seq) => {
                self.ip_id = self.ip_id.wrapping_add(1);
                Ok(Encapped {
                    sa: id,
                    spi,
                    seq,
                    local,
                    peer,
                    encap,
                })
            }
            Err(reason) => Err(self.count(reason)),
        }
    }

    /// Encapsulates every undecided packet of a batch (see [`encap`](Self::encap)), writing
    /// each verdict into the batch: `Continue` or `Drop`.
    pub fn encap_batch<B: PacketBuf>(
        &mut self,
        select: Select,
        batch: &mut Batch<B>,
        output: Output,
        now: Instant,
    ) {
        for (buf, meta, action) in batch.iter_mut() {
            if *action == gatekit_packet::Action::Continue {
                match self.encap(select, buf, output, now) {
                    Ok(_) => meta.clear_offsets(),
                    Err(r) => *action = gatekit_packet::Action::Drop(r),
                }
            }
        }
    }

    // ---- inbound ----

    /// Decapsulates the payload of a UDP datagram received on a NAT-T port (what a UDP
    /// socket returns): ESP is opened in place, IKE and keepalives are recognised
    /// (RFC 3948 §2.2, §2.3).
    pub fn decap_udp<B: PacketBuf + ?Sized>(&mut self, buf: &mut B, now: Instant) -> Decap {
        match classify_udp_payload(buf.data()) {
            UdpPayloadKind::Esp => self.decap_esp(buf, now),
            UdpPayloadKind::Ike => Decap::Ike,
            UdpPayloadKind::Keepalive => {
                self.count(DropReason::Keepalive);
                Decap::Keepalive
            }
            UdpPayloadKind::Malformed => Decap::Drop(self.count(DropReason::Truncated)),
        }
    }

    /// Decapsulates an ESP packet (starting at its header: what a raw `IPPROTO_ESP` IPv6
    /// socket returns, or a NAT-T datagram's payload) in place.
    #[inline]
    pub fn decap_esp<B: PacketBuf + ?Sized>(&mut self, buf: &mut B, now: Instant) -> Decap {
        let Some(&[a, b, c, d]) = buf.data().get(..4) else {
            return Decap::Drop(self.count(DropReason::Truncated));
        };
        let spi = u32::from_be_bytes([a, b, c, d]);
        let Some(&id) = self.inbound.get(&spi) else {
            return Decap::Drop(self.count(DropReason::UnknownSpi));
        };
        let Some(sa) = self.sa_mut(id) else {
            return Decap::Drop(self.count(DropReason::UnknownSpi));
        };
        let (seq, next_header) = match sa.open(buf, now) {
            Ok(v) => v,
            Err(r) => {
                if r == DropReason::Expired {
                    self.note_state(id, now);
                }
                return Decap::Drop(self.count(r));
            }
        };
        let d = Decapped {
            sa: id,
            spi,
            seq,
            next_header,
            mode: sa.mode,
            tunnel: sa.tunnel,
        };
        let verdict = match (sa.mode, next_header) {
            (_, NH_NONE) => Ok(Decap::Dummy(d)),
            (Mode::Tunnel, NH_IPV4 | NH_IPV6) => {
                check_inner(sa, buf, next_header).map(|()| Decap::Inner(d))
            }
            (Mode::Tunnel, _) => Err(DropReason::UnknownNextHeader),
            (Mode::Transport, _) => Ok(Decap::Inner(d)),
        };
        let verdict = match verdict {
            Ok(v) => {
                sa.stats.packets += 1;
                sa.stats.bytes += buf.len() as u64;
                v
            }
            Err(r) => Decap::Drop(sa.count_drop(r)),
        };
        if let Decap::Drop(r) = verdict {
            self.count(r);
        }
        self.note_state(id, now);
        verdict
    }

    /// Decapsulates a whole outer IPv4/IPv6 packet in place: native ESP (protocol 50), or UDP
    /// to a NAT-T port (IKE on port 500 too is recognised). In transport mode the IP header
    /// is kept, with the protocol and lengths of the decrypted payload.
    pub fn decap_ip<B: PacketBuf + ?Sized>(&mut self, buf: &mut B, now: Instant) -> Decap {
        let outer = match ip::parse_outer(buf.data()) {
            Ok(o) => o,
            Err(r) => return Decap::Drop(self.count(r)),
        };
        buf.truncate(outer.total_len);
        let mut skip = outer.ip_len;
        match outer.proto {
            IPPROTO_ESP => {}
            IPPROTO_UDP => {
                let data = buf.data();
                let Some(udp) = data.get(skip..skip + UDP_HDR) else {
                    return Decap::Drop(self.count(DropReason::Truncated));
                };
                let dport = u16::from_be_bytes([udp[2], udp[3]]);
                let ulen = usize::from(u16::from_be_bytes([udp[4], udp[5]]));
                if ulen < UDP_HDR || skip + ulen > data.len() {
                    return Decap::Drop(self.count(DropReason::Malformed));
                }
                buf.truncate(skip + ulen);
                if dport == IKE_PORT {
                    return Decap::Ike;
                }
                if !self.nat_t_ports.contains(&dport) {
                    return Decap::Drop(self.count(DropReason::Unsupported));
                }
                // RFC 3948 §3.2: the UDP checksum, zero or not, is not checked; ESP's ICV
                // protects what matters.
                skip += UDP_HDR;
                match classify_udp_payload(&buf.data()[skip..]) {
                    UdpPayloadKind::Esp => {}
                    UdpPayloadKind::Ike => return Decap::Ike,
                    UdpPayloadKind::Keepalive => {
                        self.count(DropReason::Keepalive);
                        return Decap::Keepalive;
                    }
                    UdpPayloadKind::Malformed => {
                        return Decap::Drop(self.count(DropReason::Truncated));
                    }
                }
            }
            _ => return Decap::Drop(self.count(DropReason::Unsupported)),
        }
        // Keep the IP header for transport mode; it is at most 60 bytes for IPv4, and an
        // IPv6 transport packet with extension headers before ESP is refused below.
        let mut hdr = [0u8; 60];
        let hdr_len = outer.ip_len.min(hdr.len());
        hdr[..hdr_len].copy_from_slice(&buf.data()[..hdr_len]);
        if buf.pull_front(skip).is_err() {
            return Decap::Drop(self.count(DropReason::Truncated));
        }
        let verdict = self.decap_esp(buf, now);
        if let Decap::Inner(d) = verdict
            && d.mode == Mode::Transport
        {
            let nat_t = outer.proto == IPPROTO_UDP;
            return self.restore_transport_header(buf, &hdr[..hdr_len], outer.ip_len, d, nat_t);
        }
        verdict
    }

    fn restore_transport_header<B: PacketBuf + ?Sized>(
        &mut self,
        buf: &mut B,
        hdr: &[u8],
        ip_len: usize,
        d: Decapped,
        nat_t: bool,
    ) -> Decap {
        let v4 = hdr.first().is_some_and(|b| b >> 4 == 4);
        if (!v4 && ip_len != IPV6_HDR) || ip_len != hdr.len() {
            return Decap::Drop(self.count(DropReason::Unsupported));
        }
        let payload_len = buf.len();
        let Ok(h) = buf.push_front(ip_len) else {
            return Decap::Drop(self.count(DropReason::NoRoom));
        };
        h.copy_from_slice(hdr);
        if v4 {
            h[2..4].copy_from_slice(&((ip_len + payload_len) as u16).to_be_bytes());
            h[9] = d.next_header;
            h[10..12].copy_from_slice(&[0, 0]);
            let c = gatekit_packet::checksum::internet(&h[..ip_len]);
            h[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
            h[6] = d.next_header;
        }
        if nat_t {
            let oa = self.sa_mut(d.sa).and_then(|sa| sa.nat_oa);
            fix_transport_checksum(buf.data_mut(), ip_len, d.next_header, oa);
        }
        Decap::Inner(d)
    }

    /// Decapsulates every undecided packet of a batch of whole outer packets (see
    /// [`decap_ip`](Self::decap_ip)): `Continue` for inner packets, `Local` for IKE, `Drop`
    /// otherwise (keepalives as [`DropReason::Keepalive`], dummy packets as `Consumed`).
    pub fn decap_batch<B: PacketBuf>(&mut self, batch: &mut Batch<B>, now: Instant) {
        for (buf, meta, action) in batch.iter_mut() {
            if *action == gatekit_packet::Action::Continue {
                *action =
                    crate::stage::decap_action(self.decap_ip(buf, now), meta, buf.data(), false);
            }
        }
    }

    // ---- timers ----

    /// When [`handle_timeout`](Self::handle_timeout) is next needed: a keepalive, a time
    /// lifetime, or the end of a grace period.
    pub fn poll_timeout(&self) -> Option<Instant> {
        self.iter()
            .flat_map(|(_, sa)| {
                let ka = match (sa.direction, sa.encap, sa.keepalive) {
                    (Direction::Outbound, Encap::Udp { .. }, Some(iv))
                        if sa.state != SaState::HardExpired =>
                    {
                        Some(sa.last_tx + iv)
                    }
                    _ => None,
                };
                ka.into_iter().chain(sa.next_deadline())
            })
            .min()
    }

    /// Runs the timers due at `now`: queues keepalives ([`poll_keepalive`](Self::poll_keepalive)),
    /// raises lifetime events ([`poll_event`](Self::poll_event)), removes retired SAs.
    pub fn handle_timeout(&mut self, now: Instant) {
        let ids: Vec<SaId> = self.iter().map(|(id, _)| id).collect();
        for id in ids {
            self.note_state(id, now);
            let Some(sa) = self.sa_mut(id) else { continue };
            if sa.retire_at.is_some_and(|t| now >= t) {
                let spi = sa.spi;
                if self.remove_sa(id).is_ok() {
                    self.events.push_back(Event::Retired { spi });
                }
                continue;
            }
            if let (
                Direction::Outbound,
                Encap::Udp {
                    local_port,
                    peer_port,
                },
                Some(iv),
            ) = (sa.direction, sa.encap, sa.keepalive)
                && sa.state != SaState::HardExpired
                && now >= sa.last_tx + iv
            {
                sa.last_tx = now;
                let ka = Keepalive {
                    sa: id,
                    local: sa.local,
                    local_port,
                    peer: sa.peer,
                    peer_port,
                };
                // One keepalive per NAT binding, however many SAs share it.
                let dup = self.keepalives.iter().any(|k| {
                    (k.local, k.local_port, k.peer, k.peer_port)
                        == (ka.local, ka.local_port, ka.peer, ka.peer_port)
                });
                if !dup {
                    self.keepalives.push_back(ka);
                }
            }
        }
    }

    /// The next lifetime event, if any.
    pub fn poll_event(&mut self) -> Option<Event> {
        self.events.pop_front()
    }

    /// The next keepalive to send, if any.
    pub fn poll_keepalive(&mut self) -> Option<Keepalive> {
        self.keepalives.pop_front()
    }

    /// Writes a keepalive into an empty buffer: the one byte 0xFF, behind IP and UDP headers
    /// with [`Output::Packet`].
    pub fn write_keepalive<B: PacketBuf + ?Sized>(
        &mut self,
        ka: &Keepalive,
        buf: &mut B,
        output: Output,
    ) -> Result<(), DropReason> {
        let ip_len = if ka.local.is_ipv4() {
            IPV4_HDR
        } else {
            IPV6_HDR
        };
        let front = match output {
            Output::Packet => UDP_HDR + ip_len,
            Output::Payload => 0,
        };
        if buf.headroom() < front || buf.tailroom() < 1 {
            return Err(self.count(DropReason::NoRoom));
        }
        buf.truncate(0);
        buf.push_back(1)
            .map_err(|_| DropReason::NoRoom)?
            .copy_from_slice(&NAT_KEEPALIVE);
        if output == Output::Packet {
            let id = self.ip_id;
            self.ip_id = self.ip_id.wrapping_add(1);
            push_udp_ip(
                buf,
                ka.local,
                ka.peer,
                Some((ka.local_port, ka.peer_port)),
                IPPROTO_UDP,
                0,
                id,
            )?;
        }
        Ok(())
    }
}

/// Tunnel mode: the inner packet must be of the family the next header names, and as long
/// as it says (TFC padding behind it, RFC 4303 §2.7, is cut off); and, if the SA has
/// selectors, one must admit it (RFC 4301 §5.2).
fn check_inner<B: PacketBuf + ?Sized>(
    sa: &SecurityAssociation,
    buf: &mut B,
    next_header: u8,
) -> Result<(), DropReason> {
    let data = buf.data();
    let len = match (next_header, data) {
        (NH_IPV4, [b0, _, l0, l1, ..]) if b0 >> 4 == 4 => {
            usize::from(u16::from_be_bytes([*l0, *l1]))
        }
        (NH_IPV6, [b0, _, _, _, l0, l1, ..]) if b0 >> 4 == 6 => {
            IPV6_HDR + usize::from(u16::from_be_bytes([*l0, *l1]))
        }
        _ => return Err(DropReason::Malformed),
    };
    if len > data.len() {
        return Err(DropReason::Malformed);
    }
    buf.truncate(len);
    if !sa.selectors.is_empty() {
        let key = FlowKey::from_ip(buf.data()).map_err(|_| DropReason::Malformed)?;
        if !sa.selectors.iter().any(|ts| ts.matches_inbound(&key)) {
            return Err(DropReason::Filtered);
        }
    }
    Ok(())
}

/// Seals `buf` through `sa` and adds the outer headers `output` asks for.
#[inline]
fn encap_with<B: PacketBuf + ?Sized>(
    sa: &mut SecurityAssociation,
    buf: &mut B,
    output: Output,
    ip_id: u16,
    now: Instant,
) -> Result<u64, DropReason> {
    let udp = match sa.encap {
        Encap::Udp {
            local_port,
            peer_port,
        } => Some((local_port, peer_port)),
        Encap::Native => None,
    };
    let outer_ip = if sa.peer.is_ipv4() {
        IPV4_HDR
    } else {
        IPV6_HDR
    };
    let front = ESP_PREFIX_LEN
        + if udp.is_some() { UDP_HDR } else { 0 }
        + if output == Output::Packet {
            outer_ip
        } else {
            0
        };
    match sa.mode {
        Mode::Tunnel => {
            let data = buf.data();
            let (nh, tos) = match data.first().map(|b| b >> 4) {
                Some(4) => (NH_IPV4, ip::tos_of(data)),
                Some(6) => (NH_IPV6, ip::tos_of(data)),
                _ => return Err(sa.count_drop(DropReason::Malformed)),
            };
            // Checked up front so that a drop leaves the buffer as it was.
            if buf.headroom() < front {
                return Err(sa.count_drop(DropReason::NoRoom));
            }
            let seq = sa.seal(buf, nh, now)?;
            if output == Output::Packet {
                push_udp_ip(buf, sa.local, sa.peer, udp, IPPROTO_ESP, tos, ip_id)?;
            }
            Ok(seq)
        }
        Mode::Transport => encap_transport(sa, buf, output, udp, now),
    }
}

/// Transport mode (RFC 4303 §3.1.1): ESP goes between the IP header and its payload.
fn encap_transport<B: PacketBuf + ?Sized>(
    sa: &mut SecurityAssociation,
    buf: &mut B,
    output: Output,
    udp: Option<(u16, u16)>,
    now: Instant,
) -> Result<u64, DropReason> {
    let data = buf.data();
    let (hlen, proto) = match data.first().map(|b| b >> 4) {
        Some(4) if data.len() >= IPV4_HDR => {
            let ihl = usize::from(data[0] & 0x0f) * 4;
            let frag = u16::from_be_bytes([data[6], data[7]]) & 0x3fff;
            if frag != 0 {
                return Err(sa.count_drop(DropReason::Unsupported));
            }
            (ihl, data[9])
        }
        Some(6) if data.len() >= IPV6_HDR => (IPV6_HDR, data[6]),
        _ => return Err(sa.count_drop(DropReason::Malformed)),
    };
    if hlen < IPV4_HDR || hlen > data.len() {
        return Err(sa.count_drop(DropReason::Malformed));
    }
    // The payload form is the ESP packet alone, for a socket that adds IP and UDP itself.
    let udp = udp.filter(|_| output == Output::Packet);
    let udp_len = if udp.is_some() { UDP_HDR } else { 0 };
    let front = ESP_PREFIX_LEN + udp_len;
    if buf.headroom() < front {
        return Err(sa.count_drop(DropReason::NoRoom));
    }
    let mut hdr = [0u8; 60];
    hdr[..hlen].copy_from_slice(&data[..hlen]);
    if buf.pull_front(hlen).is_err() {
        return Err(sa.count_drop(DropReason::Truncated));
    }
    let seq = match sa.seal(buf, proto, now) {
        Ok(s) => s,
        Err(r) => {
            // Put the header back: a drop leaves the packet as it was.
            if let Ok(h) = buf.push_front(hlen) {
                h.copy_from_slice(&hdr[..hlen]);
            }
            return Err(r);
        }
    };
    if let Some((sport, dport)) = udp {
        push_udp(buf, sport, dport)?;
    }
    if output == Output::Payload {
        return Ok(seq);
    }
    let payload_len = buf.len();
    let h = buf.push_front(hlen).map_err(|_| DropReason::NoRoom)?;
    h.copy_from_slice(&hdr[..hlen]);
    let proto = if udp.is_some() {
        IPPROTO_UDP
    } else {
        IPPROTO_ESP
    };
    if h[0] >> 4 == 4 {
        h[2..4].copy_from_slice(&((hlen + payload_len) as u16).to_be_bytes());
        h[9] = proto;
        h[10..12].copy_from_slice(&[0, 0]);
        let c = gatekit_packet::checksum::internet(&h[..hlen]);
        h[10..12].copy_from_slice(&c.to_be_bytes());
    } else {
        h[4..6].copy_from_slice(&(payload_len as u16).to_be_bytes());
        h[6] = proto;
        if udp.is_some() {
            fill_udp6_checksum(buf);
        }
    }
    Ok(seq)
}

/// RFC 3948 §3.1.2: a transport-mode TCP/UDP segment that crossed a NAT inside UDP-
/// encapsulated ESP carries a checksum over the sender's original addresses, not the ones
/// `packet` (IP header and segment) now has. With the original addresses known, the checksum
/// is moved to the new ones (RFC 1624); without, TCP checksums and IPv6 UDP checksums are
/// recomputed over the segment, which the ICV has just authenticated, and IPv4 UDP checksums
/// are zeroed. A segment too short to hold its checksum is left alone, for the stack to drop.
fn fix_transport_checksum(
    packet: &mut [u8],
    ip_len: usize,
    proto: u8,
    oa: Option<crate::OriginalAddrs>,
) {
    use gatekit_packet::checksum;
    let field = ip_len
        + match proto {
            IPPROTO_TCP => 16,
            IPPROTO_UDP => 6,
            _ => return,
        };
    let min = if proto == IPPROTO_TCP { 20 } else { UDP_HDR };
    if packet.len() < ip_len + min {
        return;
    }
    let v4 = packet[0] >> 4 == 4;
    let (src, dst) = if v4 {
        (12..16, 16..20)
    } else {
        (8..24, 24..40)
    };
    let old = u16::from_be_bytes([packet[field], packet[field + 1]]);
    if proto == IPPROTO_UDP && v4 && old == 0 {
        return; // no checksum to fix
    }
    let same_family = |a: IpAddr| a.is_ipv4() == v4;
    let c = match oa {
        Some(oa) if same_family(oa.src) && same_family(oa.dst) => {
            // An address the NAT left alone needs no update (§3.1.2's note): skipping it
            // also keeps a checksum of all ones from turning into zero.
            let mut c = old;
            for (orig, now) in [(oa.src, src), (oa.dst, dst)] {
                let orig = addr_bytes(orig);
                let (orig, now) = (&orig[..now.len()], &packet[now]);
                if orig != now {
                    c = checksum::update_bytes(c, orig, now).0;
                }
            }
            if c == old {
                return;
            }
            c
        }
        _ if proto == IPPROTO_UDP && v4 => {
            packet[field..field + 2].copy_from_slice(&[0, 0]);
            return;
        }
        _ => {
            packet[field..field + 2].copy_from_slice(&[0, 0]);
            let seg = &packet[ip_len..];
            let acc = if v4 {
                let mut s = [0u8; 4];
                let mut d = [0u8; 4];
                s.copy_from_slice(&packet[src]);
                d.copy_from_slice(&packet[dst]);
                checksum::pseudo_v4(s, d, proto, seg.len() as u16)
            } else {
                let mut s = [0u8; 16];
                let mut d = [0u8; 16];
                s.copy_from_slice(&packet[src]);
                d.copy_from_slice(&packet[dst]);
                checksum::pseudo_v6(s, d, proto, seg.len() as u32)
            };
            !checksum::fold(checksum::sum(acc, seg))
        }
    };
    // A UDP checksum that comes out as zero is sent as all ones (RFC 768, RFC 8200 §8.1).
    let c = if proto == IPPROTO_UDP && c == 0 {
        0xffff
    } else {
        c
    };
    packet[field..field + 2].copy_from_slice(&c.to_be_bytes());
}

fn addr_bytes(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V4(a) => {
            let mut b = [0u8; 16];
            b[..4].copy_from_slice(&a.octets());
            b
        }
        IpAddr::V6(a) => a.octets(),
    }
}

fn push_udp<B: PacketBuf + ?Sized>(buf: &mut B, sport: u16, dport: u16) -> Result<(), DropReason> {
    let len = (buf.len() + UDP_HDR) as u16;
    let h = buf.push_front(UDP_HDR).map_err(|_| DropReason::NoRoom)?;
    ip::write_udp(h, sport, dport, len);
    Ok(())
}

/// Sets the UDP checksum of an IPv6/UDP packet without extension headers.
fn fill_udp6_checksum<B: PacketBuf + ?Sized>(buf: &mut B) {
    let data = buf.data_mut();
    if data.len() < IPV6_HDR + UDP_HDR {
        return;
    }
    let mut src = [0u8; 16];
    let mut dst = [0u8; 16];
    src.copy_from_slice(&data[8..24]);
    dst.copy_from_slice(&data[24..40]);
    let c = ip::udp6_checksum(src, dst, &data[IPV6_HDR..]);
    data[IPV6_HDR + 6..IPV6_HDR + 8].copy_from_slice(&c.to_be_bytes());
}

/// Puts UDP (if `udp`) and an outer IP header in front of `buf`.
fn push_udp_ip<B: PacketBuf + ?Sized>(
    buf: &mut B,
    local: IpAddr,
    peer: IpAddr,
    udp: Option<(u16, u16)>,
    proto_if_no_udp: u8,
    tos: u8,
    ip_id: u16,
) -> Result<(), DropReason> {
    let proto = match udp {
        Some((sport, dport)) => {
            push_udp(buf, sport, dport)?;
            IPPROTO_UDP
        }
        None => proto_if_no_udp,
    };
    let len = buf.len();
    match (local, peer) {
        (IpAddr::V4(s), IpAddr::V4(d)) => {
            let total = len + IPV4_HDR;
            let total = u16::try_from(total).map_err(|_| DropReason::TooBig)?;
            let h = buf.push_front(IPV4_HDR).map_err(|_| DropReason::NoRoom)?;
            ip::write_ipv4(h, s.octets(), d.octets(), proto, total, tos, ip_id);
        }
        (IpAddr::V6(s), IpAddr::V6(d)) => {
            let plen = u16::try_from(len).map_err(|_| DropReason::TooBig)?;
            let h = buf.push_front(IPV6_HDR).map_err(|_| DropReason::NoRoom)?;
            ip::write_ipv6(h, s.octets(), d.octets(), proto, plen, tos);
            if udp.is_some() {
                fill_udp6_checksum(buf);
            }
        }
        _ => return Err(DropReason::Malformed),
    }
    Ok(())
}
