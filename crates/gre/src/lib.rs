//! GRE (RFC 2784, RFC 2890) and VXLAN (RFC 7348) tunnels, encapsulated and decapsulated in
//! place.
//!
//! - Wire views: [`GrePacket`]/[`GreRepr`] (checksum, key, sequence number) and
//!   [`VxlanPacket`]/[`VxlanRepr`] (the VNI), zero-copy, checked, never panicking.
//! - [`GreEndpoint`]: GRE tunnels identified by (local, remote, key), over IPv4 or IPv6, carrying
//!   IPv4/IPv6 ([`GreMode::L3`]) or Ethernet frames ([`GreMode::Ethernet`], Transparent
//!   Ethernet Bridging, 0x6558); optional checksums, sequence numbers with out-of-order drops
//!   (RFC 2890 §2.2), keepalives, a per-tunnel MTU with ICMP "fragmentation needed" / "packet
//!   too big" for L3 tunnels, and TCP MSS clamping.
//! - [`Vtep`]: a VXLAN tunnel endpoint over UDP 4789, one tunnel per (remote, VNI), with the UDP
//!   source port taken from the inner flow hash.
//!
//! Everything is sans-IO: the caller receives and sends the outer packets (raw IP socket, UDP
//! socket, TAP/TUN, ...) and passes time in for keepalives. Packets live in one
//! [`PacketBuf`](gatekit_packet::PacketBuf): encapsulation pushes headers into its headroom,
//! decapsulation pulls them off; nothing is copied, nothing allocated per packet. Drops are
//! values ([`Decap::Drop`], [`Encap::Drop`]) counted per [`DropReason`].
//!
//! Not here: fragmentation and reassembly of outer packets (fragmented outer packets are
//! dropped as unsupported; the tunnel MTU keeps ours whole), RFC 1701 routing, PPTP's GRE
//! version 1, buffering of out-of-order packets, VXLAN flood-and-learn of remote endpoints
//! (the switch fabric learns MACs behind tunnels; remotes are configured).
//!
//! # Example
//!
//! ```
//! use gatekit_gre::{Decap, Encap, GreEndpoint, GreMode, GreTunnelConfig, protocol};
//! use gatekit_packet::{PacketBuf, PktBuf};
//!
//! let (a, b) = ("192.0.2.1".parse()?, "198.51.100.7".parse()?);
//! let tunnel = |local, remote| GreTunnelConfig {
//!     key: Some(42),
//!     sequence: true,
//!     check_sequence: true,
//!     mode: GreMode::Ethernet,
//!     ..GreTunnelConfig::new(local, remote)
//! };
//! let mut site_a = GreEndpoint::new();
//! let to_b = site_a.add_tunnel(tunnel(a, b))?;
//! let mut site_b = GreEndpoint::new();
//! let from_a = site_b.add_tunnel(tunnel(b, a))?;
//!
//! // An Ethernet frame with 64 bytes of headroom for the outer headers.
//! let frame = [0xffu8; 60];
//! let mut buf = PktBuf::from_slice(&frame, 64, 0);
//! assert_eq!(site_a.encap(to_b, &mut buf), Encap::Ready);
//! assert_eq!(buf.len(), 20 + 12 + 60); // IPv4 + GRE with key and sequence number
//!
//! assert_eq!(
//!     site_b.decap(&mut buf),
//!     Decap::Packet { tunnel: from_a, protocol: protocol::TEB }
//! );
//! assert_eq!(buf.data(), &frame[..]);
//! # Ok::<(), Box<dyn std::error::Error>>(())
//! ```
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod error;
pub mod gre;
pub mod mtu;
mod outer;
mod tunnel;
mod vtep;
pub mod vxlan;

pub use error::{ConfigError, WireError};
pub use gre::{GrePacket, GreRepr, protocol};
pub use tunnel::{GreEndpoint, GreMode, GreTunnelConfig, Keepalive, TunnelStats};
pub use vtep::{Vtep, VtepConfig, VxlanStats, source_port};
pub use vxlan::{VXLAN_PORT, VxlanPacket, VxlanRepr};

use gatekit_packet::{DropCounters, DropReason};

/// A tunnel of a [`GreEndpoint`] or a [`Vtep`] (an index into that endpoint).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct TunnelId(pub u32);

/// What encapsulation did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Encap {
    /// The buffer holds the outer packet, ready to send.
    Ready,
    /// The packet was too big; the buffer now holds the ICMP error for its sender, to be
    /// routed like a locally generated packet (the drop is counted as
    /// [`DropReason::TooBig`]).
    IcmpError,
    /// The packet was dropped for this reason (and counted).
    Drop(DropReason),
}

/// What decapsulation did with a packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Decap {
    /// The buffer holds the inner packet: an IPv4/IPv6 packet or an Ethernet frame, as
    /// `protocol` ([`protocol`]) says.
    Packet {
        /// The tunnel it came through.
        tunnel: TunnelId,
        /// The GRE protocol type of the payload ([`protocol::TEB`] for VXLAN).
        protocol: u16,
    },
    /// A GRE keepalive answer; consumed (and counted as [`DropReason::Keepalive`]).
    Keepalive {
        /// The tunnel it answers for.
        tunnel: TunnelId,
    },
    /// The peer's GRE keepalive probe: the buffer holds the inner packet addressed back to the
    /// peer, to send on the underlay as it is.
    Reflect {
        /// The tunnel it came through.
        tunnel: TunnelId,
    },
    /// The packet was dropped for this reason (and counted).
    Drop(DropReason),
}

/// FxHash-style hasher for the tunnel indexes: their keys are short (addresses, a key or
/// VNI) and only configured tunnels are ever inserted, so chosen packets cannot build
/// collision chains; SipHash's cost per packet buys nothing here.
#[derive(Default, Clone, Copy)]
pub(crate) struct FxHasher(u64);

impl core::hash::Hasher for FxHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for c in &mut chunks {
            let mut w = [0u8; 8];
            w.copy_from_slice(c);
            self.write_u64(u64::from_le_bytes(w));
        }
        let mut w = [0u8; 8];
        let rest = chunks.remainder();
        if !rest.is_empty() {
            w[..rest.len()].copy_from_slice(rest);
            self.write_u64(u64::from_le_bytes(w));
        }
    }
    #[inline]
    fn write_u8(&mut self, i: u8) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u32(&mut self, i: u32) {
        self.write_u64(u64::from(i));
    }
    #[inline]
    fn write_u64(&mut self, i: u64) {
        self.0 = (self.0.rotate_left(5) ^ i).wrapping_mul(0x517c_c1b7_2722_0a95);
    }
    #[inline]
    fn write_usize(&mut self, i: usize) {
        self.write_u64(i as u64);
    }
}

pub(crate) type FastMap<K, V> =
    std::collections::HashMap<K, V, core::hash::BuildHasherDefault<FxHasher>>;

/// Tunnel numbers by key, for decapsulation: a hash map, and the key of the packet before
/// tried first (consecutive packets mostly share a tunnel, and comparing a key costs a
/// fraction of hashing it). Keys are only ever added, so the remembered one stays right.
#[derive(Debug)]
pub(crate) struct TunnelIndex<K> {
    map: FastMap<K, u32>,
    last: Option<(K, u32)>,
}

impl<K> Default for TunnelIndex<K> {
    fn default() -> Self {
        TunnelIndex {
            map: FastMap::default(),
            last: None,
        }
    }
}

impl<K: Copy + Eq + core::hash::Hash> TunnelIndex<K> {
    pub(crate) fn contains(&self, k: &K) -> bool {
        self.map.contains_key(k)
    }
    pub(crate) fn insert(&mut self, k: K, n: u32) {
        self.map.insert(k, n);
    }
    /// The tunnel of `k`, leaving the remembered key alone (configuration lookups).
    pub(crate) fn get(&self, k: &K) -> Option<u32> {
        self.map.get(k).copied()
    }
    /// The tunnel of a received packet's key, remembered for the next packet.
    #[inline]
    pub(crate) fn find(&mut self, k: K) -> Option<u32> {
        match self.last {
            Some((last, n)) if last == k => Some(n),
            _ => {
                let n = *self.map.get(&k)?;
                self.last = Some((k, n));
                Some(n)
            }
        }
    }
}

/// Counts a drop and returns its reason.
#[inline]
pub(crate) fn count(drops: &mut DropCounters, r: DropReason) -> DropReason {
    drops.add(r, 1);
    r
}

/// Entry points shared by the fuzz targets in `fuzz/` and the corpus-replay tests. Not a
/// stable API.
#[doc(hidden)]
pub mod fuzz {
    use crate::{Decap, GreEndpoint, GreMode, GreTunnelConfig, Vtep, VtepConfig};
    use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
    use gatekit_packet::{PacketBuf, PktBuf};

    const L4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1));
    const R4: IpAddr = IpAddr::V4(Ipv4Addr::new(192, 0, 2, 2));
    const L6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 1));
    const R6: IpAddr = IpAddr::V6(Ipv6Addr::new(0x2001, 0xdb8, 0, 0, 0, 0, 0, 2));

    /// GRE decapsulation of arbitrary bytes as an outer IP packet, through tunnels 192.0.2.2
    /// -> 192.0.2.1 (L3, key 1, sequence checked), (Ethernet, no key) and the IPv6 pair; then
    /// re-encapsulation of whatever came out.
    pub fn gre_decap(data: &[u8]) {
        let mut ep = GreEndpoint::new();
        let mut ids = Vec::new();
        for cfg in [
            GreTunnelConfig {
                key: Some(1),
                check_sequence: true,
                sequence: true,
                checksum: true,
                mss_clamp: true,
                ..GreTunnelConfig::new(L4, R4)
            },
            GreTunnelConfig {
                mode: GreMode::Ethernet,
                ..GreTunnelConfig::new(L4, R4)
            },
            GreTunnelConfig::new(L6, R6),
        ] {
            if let Ok(id) = ep.add_tunnel(cfg) {
                ids.push(id);
            }
        }
        for _ in 0..2 {
            let mut buf = PktBuf::from_slice(data, 128, 0);
            let len = buf.len();
            match ep.decap(&mut buf) {
                Decap::Packet { tunnel, .. } => {
                    assert!(buf.len() < len);
                    let _ = ep.encap(tunnel, &mut buf);
                }
                Decap::Reflect { .. } | Decap::Keepalive { .. } => assert!(buf.len() < len),
                Decap::Drop(_) => {}
            }
        }
        for id in ids {
            let mut buf = PktBuf::from_slice(data, 128, 0);
            let _ = ep.encap(id, &mut buf);
        }
        let mut m = data.to_vec();
        let _ = crate::mtu::clamp_mss(&mut m, 500);
    }

    /// VXLAN decapsulation of arbitrary bytes, as an outer IP packet and as a UDP payload.
    pub fn vxlan_decap(data: &[u8]) {
        for (l, r) in [(L4, R4), (L6, R6)] {
            let Ok(mut v) = Vtep::new(VtepConfig {
                udp_checksum_v4: true,
                ..VtepConfig::new(l)
            }) else {
                return;
            };
            let Ok(id) = v.add_tunnel(r, 42) else { return };
            let mut buf = PktBuf::from_slice(data, 64, 0);
            if let Decap::Packet { tunnel, .. } = v.decap(&mut buf) {
                assert_eq!(tunnel, id);
                let _ = v.encap(tunnel, &mut buf);
            }
            let mut buf = PktBuf::from_slice(data, 64, 0);
            if let Decap::Packet { .. } = v.decap_udp_payload(&mut buf, r) {
                assert!(buf.len() + 8 == data.len());
            }
        }
    }
}
