//! Security associations: configuration, lifetimes, counters, and the per-packet seal and
//! open of RFC 4303 §3.3 and §3.4.

use crate::ConfigError;
use crate::crypto::{Aead, Backend, ICV_LEN, IV_LEN, KeyMaterial, Suite};
use crate::policy::TrafficSelector;
use crate::replay::{DEFAULT_WINDOW, ReplayError, ReplayWindow};
use crate::wire::ESP_HEADER_LEN;
use core::net::IpAddr;
use core::time::Duration;
use gatekit_packet::{DropCounters, DropReason, Instant, PacketBuf};

/// RFC 4303 §2.4 padding: the bytes 1, 2, 3, ... (as many as the largest boundary needs).
const PAD_BYTES: [u8; MAX_PAD_TO] = {
    let mut p = [0u8; MAX_PAD_TO];
    let mut i = 0;
    while i < MAX_PAD_TO {
        p[i] = i as u8 + 1;
        i += 1;
    }
    p
};

/// Bytes an SA puts in front of the payload: header and IV.
pub const ESP_PREFIX_LEN: usize = ESP_HEADER_LEN + IV_LEN;
/// Most bytes an SA puts behind the payload: padding (at most [`MAX_PAD_TO`]` - 1` bytes),
/// pad length, next header and the ICV. With the default [`DEFAULT_PAD_TO`] it is at most
/// 33 bytes.
pub const ESP_MAX_TRAILER_LEN: usize = MAX_PAD_TO - 1 + 2 + ICV_LEN;

/// The default padding boundary of the encrypted payload ([`SaConfig::pad_to`]): one AES
/// block. RFC 4303 §2.4 asks for 4 bytes with these AEADs (block size 1, RFC 4106 §3.2,
/// RFC 7634 §3); padding to whole 16-byte blocks spares the AEAD a partial last block, which
/// costs about as much as a whole extra block of a small packet (ring seals 68 bytes
/// a third slower than 80 here), at the price of 6 bytes per packet on average.
pub const DEFAULT_PAD_TO: usize = 16;
/// The largest padding boundary [`SaConfig::pad_to`] accepts.
pub const MAX_PAD_TO: usize = 64;

/// Which way an SA carries packets.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Direction {
    /// Packets received from the peer.
    Inbound,
    /// Packets sent to the peer.
    Outbound,
}

/// Tunnel or transport mode (RFC 4301 §4.1).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Mode {
    /// A whole inner IP packet inside a new outer IP header.
    #[default]
    Tunnel,
    /// The upper-layer payload of the IP packet, between its header and its payload.
    Transport,
}

/// How ESP packets travel.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub enum Encap {
    /// Native ESP, IP protocol 50.
    #[default]
    Native,
    /// Inside UDP (RFC 3948) between these ports (4500 and 4500 unless a NAT changed them).
    Udp {
        /// Our port.
        local_port: u16,
        /// The peer's port (as seen from here, after its NAT).
        peer_port: u16,
    },
}

/// The id of a route-based tunnel interface (an `ipsec0`-like device): routes point at it and
/// the SA bound to it carries the traffic, whatever its addresses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TunnelId(pub u32);

/// Lifetimes of an SA (RFC 4301 §4.4.2.1). Passing a soft limit raises a rekey signal
/// ([`Event::SoftExpired`](crate::Event)); passing a hard limit makes the SA unusable. `None`
/// means no limit.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Lifetime {
    /// Soft limit on bytes (inner payload) carried.
    pub soft_bytes: Option<u64>,
    /// Hard limit on bytes carried.
    pub hard_bytes: Option<u64>,
    /// Soft limit on packets carried.
    pub soft_packets: Option<u64>,
    /// Hard limit on packets carried.
    pub hard_packets: Option<u64>,
    /// Soft limit on age.
    pub soft_time: Option<Duration>,
    /// Hard limit on age.
    pub hard_time: Option<Duration>,
}

/// Where an SA is in its life.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum SaState {
    /// In use.
    Active,
    /// Past a soft limit: still in use, a replacement should be negotiated.
    SoftExpired,
    /// Past a hard limit (or sequence numbers exhausted): packets are dropped as `expired`.
    HardExpired,
}

/// Everything needed to make an SA from static keys.
#[derive(Debug, Clone)]
pub struct SaConfig {
    /// The Security Parameters Index (256 and up; 1..=255 are reserved, RFC 4303 §2.1).
    pub spi: u32,
    /// Inbound or outbound.
    pub direction: Direction,
    /// The cipher suite.
    pub suite: Suite,
    /// Key and salt.
    pub key: KeyMaterial,
    /// The AEAD implementation.
    pub backend: Backend,
    /// Tunnel or transport mode.
    pub mode: Mode,
    /// Native ESP or UDP-encapsulated.
    pub encap: Encap,
    /// Our outer address.
    pub local: IpAddr,
    /// The peer's outer address.
    pub peer: IpAddr,
    /// Extended (64-bit) sequence numbers (RFC 4303 §2.2.1).
    pub esn: bool,
    /// Anti-replay window size in packets (inbound only).
    pub replay_window: u32,
    /// Lifetimes.
    pub lifetime: Lifetime,
    /// Policy-based VPN: the traffic the SA carries (outbound selection and inbound check).
    /// Empty means no policy: the SA is reached by tunnel id or by its [`SaId`](crate::SaId).
    pub selectors: Vec<TrafficSelector>,
    /// Route-based VPN: the tunnel interface the SA is bound to.
    pub tunnel: Option<TunnelId>,
    /// NAT-T keepalive interval for outbound UDP-encapsulated SAs (RFC 3948 §4), `None` for
    /// none. Sent only when nothing else went to the peer for that long.
    pub keepalive: Option<Duration>,
    /// Where the sequence numbers stand, 0 for a new SA: outbound, the last number sent;
    /// inbound, the highest number already accepted (the replay window starts there). For
    /// moving an SA between processes, and for tests of ESN and exhaustion.
    pub seq_start: u64,
    /// Outbound: the boundary the encrypted payload (inner packet, padding, pad length and
    /// next header) is padded to, a power of two from 4 to [`MAX_PAD_TO`]; default
    /// [`DEFAULT_PAD_TO`]. The receiver accepts any padding RFC 4303 allows.
    pub pad_to: usize,
    /// Inbound transport mode over UDP (NAT-T): the addresses the sender put in the
    /// pseudo-header of its TCP/UDP checksums (the NAT-OA payloads of RFC 3947), so that
    /// decap can move the checksum to the addresses the packet arrived with (RFC 3948
    /// §3.1.2). Without them decap recomputes TCP checksums (and IPv6 UDP ones) over the
    /// decrypted segment and zeroes IPv4 UDP checksums, as §3.1.2 also allows.
    pub nat_oa: Option<OriginalAddrs>,
}

/// The original source and destination addresses of a peer behind a NAT (NAT-OA, RFC 3947
/// §5.2): what the sender of transport-mode traffic computed its TCP/UDP checksums with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OriginalAddrs {
    /// The sender's own address before the NAT.
    pub src: IpAddr,
    /// The destination address the sender used.
    pub dst: IpAddr,
}

impl SaConfig {
    /// An SA in tunnel mode over native ESP, 32-bit sequence numbers, default window, no
    /// lifetimes, no selectors.
    pub fn new(
        spi: u32,
        direction: Direction,
        suite: Suite,
        key: KeyMaterial,
        local: IpAddr,
        peer: IpAddr,
    ) -> Self {
        SaConfig {
            spi,
            direction,
            suite,
            key,
            backend: Backend::default(),
            mode: Mode::Tunnel,
            encap: Encap::Native,
            local,
            peer,
            esn: false,
            replay_window: DEFAULT_WINDOW,
            lifetime: Lifetime::default(),
            selectors: Vec::new(),
            tunnel: None,
            keepalive: None,
            seq_start: 0,
            pad_to: DEFAULT_PAD_TO,
            nat_oa: None,
        }
    }
    /// Sets transport or tunnel mode.
    pub fn mode(mut self, mode: Mode) -> Self {
        self.mode = mode;
        self
    }
    /// UDP encapsulation between `local_port` and `peer_port`, with NAT keepalives every 20 s
    /// on outbound SAs.
    pub fn udp_encap(mut self, local_port: u16, peer_port: u16) -> Self {
        self.encap = Encap::Udp {
            local_port,
            peer_port,
        };
        self.keepalive = Some(Duration::from_secs(20));
        self
    }
    /// Extended sequence numbers on or off.
    pub fn esn(mut self, on: bool) -> Self {
        self.esn = on;
        self
    }
    /// Sets the AEAD backend.
    pub fn backend(mut self, backend: Backend) -> Self {
        self.backend = backend;
        self
    }
    /// Adds a traffic selector.
    pub fn selector(mut self, ts: TrafficSelector) -> Self {
        self.selectors.push(ts);
        self
    }
    /// Binds the SA to a route-based tunnel.
    pub fn tunnel(mut self, id: TunnelId) -> Self {
        self.tunnel = Some(id);
        self
    }
    /// Sets the lifetimes.
    pub fn lifetime(mut self, lifetime: Lifetime) -> Self {
        self.lifetime = lifetime;
        self
    }
    /// Sets the anti-replay window size.
    pub fn replay_window(mut self, packets: u32) -> Self {
        self.replay_window = packets;
        self
    }
    /// Sets the padding boundary of outbound packets.
    pub fn pad_to(mut self, bytes: usize) -> Self {
        self.pad_to = bytes;
        self
    }
    /// Sets the original addresses of an inbound NAT-T transport-mode SA (see
    /// [`nat_oa`](Self::nat_oa)).
    pub fn nat_oa(mut self, src: IpAddr, dst: IpAddr) -> Self {
        self.nat_oa = Some(OriginalAddrs { src, dst });
        self
    }

    pub(crate) fn validate(&self) -> Result<(), ConfigError> {
        if self.spi < 256 {
            return Err(ConfigError::ReservedSpi { spi: self.spi });
        }
        if self.local.is_ipv4() != self.peer.is_ipv4() {
            return Err(ConfigError::AddressFamily {
                spi: self.spi,
                local: self.local,
                peer: self.peer,
            });
        }
        if !(crate::replay::MIN_WINDOW..=crate::replay::MAX_WINDOW).contains(&self.replay_window) {
            return Err(ConfigError::ReplayWindow {
                size: self.replay_window,
                min: crate::replay::MIN_WINDOW,
                max: crate::replay::MAX_WINDOW,
            });
        }
        if let Encap::Udp { local_port: 0, .. } | Encap::Udp { peer_port: 0, .. } = self.encap {
            return Err(ConfigError::ZeroPort { spi: self.spi });
        }
        if let Some(oa) = self.nat_oa
            && (oa.src.is_ipv4() != self.local.is_ipv4()
                || oa.dst.is_ipv4() != self.local.is_ipv4())
        {
            return Err(ConfigError::NatOaFamily {
                spi: self.spi,
                src: oa.src,
                dst: oa.dst,
            });
        }
        if !self.pad_to.is_power_of_two() || !(4..=MAX_PAD_TO).contains(&self.pad_to) {
            return Err(ConfigError::PadTo {
                spi: self.spi,
                bytes: self.pad_to,
                max: MAX_PAD_TO,
            });
        }
        Ok(())
    }
}

/// Counters of one SA.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SaStats {
    /// Packets sealed (outbound) or opened (inbound).
    pub packets: u64,
    /// Inner bytes carried (what was sealed, or what was left after opening).
    pub bytes: u64,
    /// Packets dropped on this SA, by reason.
    pub drops: DropCounters,
}

/// A security association: keys, sequence numbers, replay window, lifetimes and counters.
/// Made by the [`Endpoint`](crate::Endpoint) from an [`SaConfig`]; read it through
/// [`Endpoint::sa`](crate::Endpoint::sa).
pub struct SecurityAssociation {
    pub(crate) spi: u32,
    pub(crate) direction: Direction,
    pub(crate) suite: Suite,
    pub(crate) aead: Aead,
    pub(crate) mode: Mode,
    pub(crate) encap: Encap,
    pub(crate) local: IpAddr,
    pub(crate) peer: IpAddr,
    pub(crate) esn: bool,
    pub(crate) selectors: Vec<TrafficSelector>,
    pub(crate) tunnel: Option<TunnelId>,
    pub(crate) keepalive: Option<Duration>,
    /// Outbound: the last sequence number sent.
    pub(crate) seq: u64,
    pub(crate) replay: Option<ReplayWindow>,
    pub(crate) lifetime: Lifetime,
    pub(crate) created: Instant,
    pub(crate) state: SaState,
    /// When the SA last sent something (keepalive timing).
    pub(crate) last_tx: Instant,
    /// An inbound SA being replaced: removed at this time.
    pub(crate) retire_at: Option<Instant>,
    pub(crate) stats: SaStats,
    /// Outbound padding boundary, a power of two.
    pub(crate) pad_to: usize,
    /// Inbound NAT-T transport mode: the sender's original addresses.
    pub(crate) nat_oa: Option<OriginalAddrs>,
    /// Below these marks no limit can change the state: the per-packet check.
    recheck: Recheck,
}

/// The counters, sequence number and time below which an SA's state cannot change, so that
/// the per-packet lifetime check is four compares; recomputed whenever the state is.
#[derive(Debug, Clone, Copy)]
struct Recheck {
    bytes: u64,
    packets: u64,
    seq: u64,
    at: Instant,
}

impl core::fmt::Debug for SecurityAssociation {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        f.debug_struct("SecurityAssociation")
            .field("spi", &format_args!("{:#010x}", self.spi))
            .field("direction", &self.direction)
            .field("suite", &self.suite)
            .field("mode", &self.mode)
            .field("encap", &self.encap)
            .field("local", &self.local)
            .field("peer", &self.peer)
            .field("esn", &self.esn)
            .field("state", &self.state)
            .field("stats", &self.stats)
            .finish_non_exhaustive()
    }
}

impl SecurityAssociation {
    pub(crate) fn new(cfg: &SaConfig, now: Instant) -> Result<Self, ConfigError> {
        cfg.validate()?;
        let mut sa = SecurityAssociation {
            spi: cfg.spi,
            direction: cfg.direction,
            suite: cfg.suite,
            aead: Aead::new(cfg.suite, cfg.backend, &cfg.key)?,
            mode: cfg.mode,
            encap: cfg.encap,
            local: cfg.local,
            peer: cfg.peer,
            esn: cfg.esn,
            selectors: cfg.selectors.clone(),
            tunnel: cfg.tunnel,
            keepalive: cfg.keepalive,
            seq: cfg.seq_start,
            replay: (cfg.direction == Direction::Inbound)
                .then(|| ReplayWindow::starting_at(cfg.replay_window, cfg.seq_start)),
            lifetime: cfg.lifetime,
            created: now,
            state: SaState::Active,
            last_tx: now,
            retire_at: None,
            stats: SaStats::default(),
            pad_to: cfg.pad_to,
            nat_oa: cfg.nat_oa,
            recheck: Recheck {
                bytes: 0,
                packets: 0,
                seq: 0,
                at: Instant::ZERO,
            },
        };
        sa.recheck = sa.marks();
        Ok(sa)
    }

    /// The SPI.
    pub fn spi(&self) -> u32 {
        self.spi
    }
    /// Inbound or outbound.
    pub fn direction(&self) -> Direction {
        self.direction
    }
    /// The cipher suite.
    pub fn suite(&self) -> Suite {
        self.suite
    }
    /// Tunnel or transport.
    pub fn mode(&self) -> Mode {
        self.mode
    }
    /// Native or UDP-encapsulated.
    pub fn encap(&self) -> Encap {
        self.encap
    }
    /// Our outer address.
    pub fn local(&self) -> IpAddr {
        self.local
    }
    /// The peer's outer address.
    pub fn peer(&self) -> IpAddr {
        self.peer
    }
    /// The route-based tunnel the SA is bound to.
    pub fn tunnel(&self) -> Option<TunnelId> {
        self.tunnel
    }
    /// The traffic selectors.
    pub fn selectors(&self) -> &[TrafficSelector] {
        &self.selectors
    }
    /// Where the SA is in its life.
    pub fn state(&self) -> SaState {
        self.state
    }
    /// Counters.
    pub fn stats(&self) -> &SaStats {
        &self.stats
    }
    /// Outbound: the last sequence number sent. Inbound: the highest one accepted.
    pub fn seq(&self) -> u64 {
        match &self.replay {
            Some(w) => w.top(),
            None => self.seq,
        }
    }
    /// When an inbound SA being replaced will be removed.
    pub fn retire_at(&self) -> Option<Instant> {
        self.retire_at
    }

    /// The highest sequence number the SA may use (RFC 4303 §3.3.3: no cycling).
    fn max_seq(&self) -> u64 {
        if self.esn {
            u64::MAX
        } else {
            u64::from(u32::MAX)
        }
    }

    /// The next time-based lifetime event, if any.
    pub(crate) fn next_deadline(&self) -> Option<Instant> {
        let soft = match self.state {
            SaState::Active => self.lifetime.soft_time,
            _ => None,
        };
        let hard = match self.state {
            SaState::HardExpired => None,
            _ => self.lifetime.hard_time,
        };
        [soft, hard]
            .into_iter()
            .flatten()
            .map(|d| self.created + d)
            .chain(self.retire_at)
            .min()
    }

    /// Recomputes the state from the counters, `now` and the sequence space; returns the new
    /// state if it changed.
    #[inline]
    pub(crate) fn update_state(&mut self, now: Instant) -> Option<SaState> {
        let r = &self.recheck;
        if self.stats.bytes < r.bytes
            && self.stats.packets < r.packets
            && self.seq < r.seq
            && now < r.at
        {
            return None;
        }
        self.update_state_slow(now)
    }

    #[cold]
    fn update_state_slow(&mut self, now: Instant) -> Option<SaState> {
        if self.state == SaState::HardExpired {
            return None;
        }
        let l = &self.lifetime;
        let age = now.saturating_since(self.created);
        let over = |v: u64, lim: Option<u64>| lim.is_some_and(|lim| v >= lim);
        let over_t = |lim: Option<Duration>| lim.is_some_and(|lim| age >= lim);
        let max = self.max_seq();
        let new = if over(self.stats.bytes, l.hard_bytes)
            || over(self.stats.packets, l.hard_packets)
            || over_t(l.hard_time)
            || (self.direction == Direction::Outbound && self.seq >= max)
        {
            SaState::HardExpired
        } else if over(self.stats.bytes, l.soft_bytes)
            || over(self.stats.packets, l.soft_packets)
            || over_t(l.soft_time)
            // Ask for a new SA when 1/16 of the sequence space is left.
            || (self.direction == Direction::Outbound && self.seq >= max - (max >> 4))
        {
            SaState::SoftExpired
        } else {
            SaState::Active
        };
        self.recheck = self.marks_for(new.max(self.state));
        (new > self.state).then(|| {
            self.state = new;
            new
        })
    }

    fn marks(&self) -> Recheck {
        self.marks_for(self.state)
    }

    /// The first counter values, sequence number and time at which an SA in `state` would
    /// move on. The limits of the state it is in count too, so that a limit passed by a
    /// jump (a configured start sequence) is still seen.
    fn marks_for(&self, state: SaState) -> Recheck {
        let l = &self.lifetime;
        let max = self.max_seq();
        let outbound = self.direction == Direction::Outbound;
        let (bytes, packets, seq, time) = match state {
            SaState::Active => (
                min_opt(l.soft_bytes, l.hard_bytes),
                min_opt(l.soft_packets, l.hard_packets),
                outbound.then(|| max - (max >> 4)),
                min_opt(l.soft_time, l.hard_time),
            ),
            SaState::SoftExpired => (
                l.hard_bytes,
                l.hard_packets,
                outbound.then_some(max),
                l.hard_time,
            ),
            // Nothing moves a hard-expired SA; `update_state_slow` returns at once.
            _ => (None, None, None, None),
        };
        Recheck {
            bytes: bytes.unwrap_or(u64::MAX),
            packets: packets.unwrap_or(u64::MAX),
            seq: seq.unwrap_or(u64::MAX),
            at: time.map_or(Instant::MAX, |d| self.created + d),
        }
    }

    #[inline]
    fn aad(&self, seq: u64) -> ([u8; 12], usize) {
        // RFC 4106 §5 / RFC 7634 §2.1: SPI ‖ seq (32-bit) or SPI ‖ seq high ‖ seq low (ESN).
        let mut aad = [0u8; 12];
        aad[..4].copy_from_slice(&self.spi.to_be_bytes());
        if self.esn {
            aad[4..12].copy_from_slice(&seq.to_be_bytes());
            (aad, 12)
        } else {
            aad[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
            (aad, 8)
        }
    }

    /// Turns the payload in `buf` into an ESP packet (header, IV, ciphertext, trailer, ICV),
    /// in place. The caller checked that the headroom holds [`ESP_PREFIX_LEN`] bytes.
    /// Returns the sequence number used.
    #[inline]
    pub(crate) fn seal<B: PacketBuf + ?Sized>(
        &mut self,
        buf: &mut B,
        next_header: u8,
        now: Instant,
    ) -> Result<u64, DropReason> {
        // The state itself is updated by the caller, which reports the change.
        if self.state == SaState::HardExpired || now >= self.hard_deadline() {
            return Err(self.count_drop(DropReason::Expired));
        }
        if self.seq >= self.max_seq() {
            return Err(self.count_drop(DropReason::Expired));
        }
        let plen = buf.len();
        // RFC 4303 §2.4: pad so that pad length and next header end on a 4-byte boundary
        // at least (the AEAD block size here is 1, RFC 4106 §3.2, RFC 7634 §3); see
        // DEFAULT_PAD_TO for why the default is 16.
        let pad = (plen + 2).wrapping_neg() & (self.pad_to - 1);
        let trailer = pad + 2 + ICV_LEN;
        if buf.tailroom() < trailer || buf.headroom() < ESP_PREFIX_LEN {
            return Err(self.count_drop(DropReason::NoRoom));
        }
        let seq = self.seq + 1;
        let Ok(t) = buf.push_back(trailer) else {
            return Err(self.count_drop(DropReason::NoRoom));
        };
        t[..pad].copy_from_slice(&PAD_BYTES[..pad]);
        t[pad] = pad as u8;
        t[pad + 1] = next_header;
        let iv = seq.to_be_bytes();
        let Ok(h) = buf.push_front(ESP_PREFIX_LEN) else {
            let _ = buf.trim_back(trailer);
            return Err(self.count_drop(DropReason::NoRoom));
        };
        h[..4].copy_from_slice(&self.spi.to_be_bytes());
        h[4..8].copy_from_slice(&(seq as u32).to_be_bytes());
        h[8..16].copy_from_slice(&iv);
        let (aad, aad_len) = self.aad(seq);
        let data = buf.data_mut();
        let body_end = data.len() - ICV_LEN;
        let (body, icv) = data[ESP_PREFIX_LEN..].split_at_mut(body_end - ESP_PREFIX_LEN);
        match self.aead.seal(&iv, &aad[..aad_len], body) {
            Ok(tag) => icv.copy_from_slice(&tag),
            Err(_) => {
                // Cannot happen for the lengths ESP carries; leave no half-made packet.
                let _ = buf.pull_front(ESP_PREFIX_LEN);
                let _ = buf.trim_back(trailer);
                return Err(self.count_drop(DropReason::TooBig));
            }
        }
        self.seq = seq;
        self.stats.packets += 1;
        self.stats.bytes += plen as u64;
        self.last_tx = now;
        Ok(seq)
    }

    #[inline]
    fn hard_deadline(&self) -> Instant {
        match self.lifetime.hard_time {
            Some(d) => self.created + d,
            None => Instant::MAX,
        }
    }

    #[inline]
    pub(crate) fn count_drop(&mut self, reason: DropReason) -> DropReason {
        self.stats.drops.add(reason, 1);
        reason
    }

    /// Verifies and decrypts the ESP packet in `buf` (starting at its header) in place,
    /// leaving the payload; returns the full sequence number and the next header.
    ///
    /// Order (RFC 4303 §3.4): replay check, ICV check and decryption, window update, then
    /// the trailer.
    #[inline]
    pub(crate) fn open<B: PacketBuf + ?Sized>(
        &mut self,
        buf: &mut B,
        now: Instant,
    ) -> Result<(u64, u8), DropReason> {
        const MIN: usize = ESP_PREFIX_LEN + 2 + ICV_LEN;
        if buf.len() < MIN {
            return Err(self.count_drop(DropReason::Truncated));
        }
        // The state itself is updated by the caller, which reports the change.
        if self.state == SaState::HardExpired || now >= self.hard_deadline() {
            return Err(self.count_drop(DropReason::Expired));
        }
        let data = buf.data_mut();
        let low = u32::from_be_bytes([data[4], data[5], data[6], data[7]]);
        let Some(window) = self.replay.as_ref() else {
            return Err(self.count_drop(DropReason::NoSa));
        };
        let seq = if self.esn {
            match window.infer_esn(low) {
                Ok(s) => s,
                Err(_) => return Err(self.count_drop(DropReason::Replay)),
            }
        } else {
            u64::from(low)
        };
        if window.check(seq).is_err() {
            return Err(self.count_drop(DropReason::Replay));
        }
        let mut iv = [0u8; IV_LEN];
        iv.copy_from_slice(&data[ESP_HEADER_LEN..ESP_PREFIX_LEN]);
        let (aad, aad_len) = self.aad(seq);
        let body_end = data.len() - ICV_LEN;
        let (body, icv) = data[ESP_PREFIX_LEN..].split_at_mut(body_end - ESP_PREFIX_LEN);
        let mut tag = [0u8; ICV_LEN];
        tag.copy_from_slice(icv);
        if self.aead.open(&iv, &aad[..aad_len], body, &tag).is_err() {
            return Err(self.count_drop(DropReason::AuthFailed));
        }
        if let Some(w) = self.replay.as_mut()
            && let Err(ReplayError::Duplicate | ReplayError::TooOld | ReplayError::Invalid) =
                w.accept(seq)
        {
            return Err(self.count_drop(DropReason::Replay));
        }
        let n = body.len();
        let next_header = body[n - 1];
        let pad = usize::from(body[n - 2]);
        if pad + 2 > n {
            return Err(self.count_drop(DropReason::BadPadding));
        }
        // RFC 4303 §2.4: the padding is 1, 2, 3, ...; the receiver checks it.
        let padding = &body[n - 2 - pad..n - 2];
        if padding.iter().enumerate().any(|(i, &b)| b != i as u8 + 1) {
            return Err(self.count_drop(DropReason::BadPadding));
        }
        // Cannot fail: both lengths were checked against the packet above.
        if buf.pull_front(ESP_PREFIX_LEN).is_err() || buf.trim_back(pad + 2 + ICV_LEN).is_err() {
            return Err(self.count_drop(DropReason::Truncated));
        }
        // `stats.packets` and `bytes` are counted by the caller once the payload is accepted.
        Ok((seq, next_header))
    }
}

fn min_opt<T: Ord>(a: Option<T>, b: Option<T>) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(a.min(b)),
        (a, b) => a.or(b),
    }
}
