//! Flow keys: the 5-tuple of a packet, read in place.

use core::net::IpAddr;
use etherparse::{IpNumber, IpSlice};

/// Why no flow key could be read.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum FlowError {
    /// The bytes are not a well-formed IPv4 or IPv6 packet (length, version or header fields).
    #[error("not a valid IP packet")]
    NotIp,
    /// The frame is not Ethernet carrying IPv4 or IPv6.
    #[error("not an IP-carrying Ethernet frame")]
    NotIpFrame,
    /// The transport header the IP header announces is cut short.
    #[error("transport header truncated")]
    TruncatedTransport,
}

/// The transport part of a flow key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Transport {
    /// TCP, UDP, UDP-Lite, SCTP or DCCP: source and destination ports.
    Ports {
        /// Source port.
        src: u16,
        /// Destination port.
        dst: u16,
    },
    /// ICMP or ICMPv6: type, code, and the identifier for echo messages (0 otherwise).
    Icmp {
        /// ICMP type.
        ty: u8,
        /// ICMP code.
        code: u8,
        /// Echo identifier, or 0.
        id: u16,
    },
    /// Another protocol, or a non-first fragment: no transport fields.
    Other,
}

/// The 5-tuple identifying a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct FlowKey {
    /// Source address.
    pub src: IpAddr,
    /// Destination address.
    pub dst: IpAddr,
    /// IP protocol number (the last IPv6 next header after extension headers).
    pub proto: u8,
    /// Ports, ICMP fields, or nothing.
    pub transport: Transport,
}

/// Whether the IP payload starts with the transport header (not fragmented, or the first
/// IPv4 fragment).
pub(crate) fn has_transport_header(ip: &IpSlice<'_>) -> bool {
    if !ip.payload().fragmented {
        return true;
    }
    match ip {
        IpSlice::Ipv4(v4) => v4.header().fragments_offset().value() == 0,
        // An IPv6 first fragment has offset 0 too, but etherparse does not expose it cheaply;
        // fragments are treated as port-less, which is what conntrack does before reassembly.
        IpSlice::Ipv6(_) => false,
    }
}

/// An IPv4 packet without an authentication header, from its fixed header: `Err` if the
/// header is not valid, `None` if it is not such a packet (not IPv4, AH, shorter than 20
/// bytes). Valid and invalid are what etherparse says, checked by proptest.
#[inline]
pub(crate) fn plain_ipv4(p: &[u8]) -> Option<Result<PlainIpv4<'_>, ()>> {
    const AH: u8 = 51;
    let fixed = p.first_chunk::<20>()?;
    if fixed[0] >> 4 != 4 || fixed[9] == AH {
        return None;
    }
    let header_len = usize::from(fixed[0] & 0x0f) * 4;
    let total_len = usize::from(u16::from_be_bytes([fixed[2], fixed[3]]));
    if header_len < 20 || total_len < header_len || total_len > p.len() {
        return Some(Err(()));
    }
    Some(Ok(PlainIpv4 {
        fixed,
        header_len,
        total_len,
    }))
}

/// The header and total lengths of a well-formed IPv4 packet without an authentication
/// header at the start of `p` (which may be longer): version 4, a header of at least 20
/// bytes, and a total length between the header's and `p`'s. `None` for anything else,
/// which callers read with a general parser (etherparse accepts exactly these packets among
/// plain IPv4 ones, checked by proptest). The other fixed fields are at their RFC 791
/// offsets: protocol at 9, source at 12, destination at 16, flags and fragment offset at 6.
#[inline]
pub fn plain_ipv4_lengths(p: &[u8]) -> Option<(usize, usize)> {
    match plain_ipv4(p)? {
        Ok(ip) => Some((ip.header_len, ip.total_len)),
        Err(()) => None,
    }
}

/// A view of a well-formed IPv4 packet without an authentication header (what
/// [`plain_ipv4_lengths`] accepts), whose fields are read at their RFC 791 offsets when
/// asked for: the per-packet case of every outer header a tunnel endpoint reads. Anything
/// else goes to a general parser, which says what is wrong.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PlainIpv4<'a> {
    fixed: &'a [u8; 20],
    header_len: usize,
    total_len: usize,
}

impl<'a> PlainIpv4<'a> {
    /// The packet at the start of `p`; `None` where [`plain_ipv4_lengths`] gives none.
    #[inline]
    pub fn parse(p: &'a [u8]) -> Option<PlainIpv4<'a>> {
        plain_ipv4(p)?.ok()
    }
    /// Bytes of the header, options included.
    #[inline]
    pub fn header_len(&self) -> usize {
        self.header_len
    }
    /// The total length field: header and payload (the buffer may hold link padding
    /// behind it).
    #[inline]
    pub fn total_len(&self) -> usize {
        self.total_len
    }
    /// The protocol field.
    #[inline]
    pub fn proto(&self) -> u8 {
        self.fixed[9]
    }
    /// The source address.
    #[inline]
    pub fn src(&self) -> core::net::Ipv4Addr {
        let h = self.fixed;
        core::net::Ipv4Addr::new(h[12], h[13], h[14], h[15])
    }
    /// The destination address.
    #[inline]
    pub fn dst(&self) -> core::net::Ipv4Addr {
        let h = self.fixed;
        core::net::Ipv4Addr::new(h[16], h[17], h[18], h[19])
    }
    /// More fragments follow, or the fragment offset is not 0: a piece of a larger packet.
    #[inline]
    pub fn is_fragment(&self) -> bool {
        u16::from_be_bytes([self.fixed[6], self.fixed[7]]) & 0x3fff != 0
    }
    /// Whether the payload starts with the transport header: only the first fragment
    /// (offset 0) carries it.
    #[inline]
    pub(crate) fn carries_transport(&self) -> bool {
        u16::from_be_bytes([self.fixed[6], self.fixed[7]]) & 0x1fff == 0
    }
}

impl FlowKey {
    /// Reads the key of the IP packet at the start of `packet`.
    pub fn from_ip(packet: &[u8]) -> Result<FlowKey, FlowError> {
        if let Some(key) = Self::from_plain_ipv4(packet) {
            return key;
        }
        let ip = IpSlice::from_slice(packet).map_err(|_| FlowError::NotIp)?;
        Self::from_ip_slice(&ip)
    }

    /// The key of an IPv4 packet without an authentication header, read from the fixed
    /// header fields (the per-packet case of every tunnel and firewall stage); `None` for
    /// anything else, which the general parser reads. It accepts and rejects exactly what
    /// the general parser does.
    #[inline]
    fn from_plain_ipv4(p: &[u8]) -> Option<Result<FlowKey, FlowError>> {
        let ip = match plain_ipv4(p)? {
            Ok(ip) => ip,
            Err(()) => return Some(Err(FlowError::NotIp)),
        };
        let (h, ihl, total, first) = (
            ip.fixed,
            ip.header_len,
            ip.total_len,
            ip.carries_transport(),
        );
        let word = |i: usize| [h[i], h[i + 1], h[i + 2], h[i + 3]];
        let transport = if first {
            match transport_of(IpNumber(h[9]), p.get(ihl..total)?) {
                Ok(t) => t,
                Err(e) => return Some(Err(e)),
            }
        } else {
            Transport::Other
        };
        Some(Ok(FlowKey {
            src: IpAddr::from(word(12)),
            dst: IpAddr::from(word(16)),
            proto: h[9],
            transport,
        }))
    }

    /// Reads the key of the IP packet inside an Ethernet frame (VLAN tags allowed).
    pub fn from_ethernet(frame: &[u8]) -> Result<FlowKey, FlowError> {
        let sliced = etherparse::SlicedPacket::from_ethernet(frame).map_err(|e| match e {
            etherparse::err::packet::SliceError::Len(_) => FlowError::NotIpFrame,
            _ => FlowError::NotIp,
        })?;
        let ip = match sliced.net {
            Some(etherparse::NetSlice::Ipv4(v4)) => IpSlice::Ipv4(v4),
            Some(etherparse::NetSlice::Ipv6(v6)) => IpSlice::Ipv6(v6),
            _ => return Err(FlowError::NotIpFrame),
        };
        Self::from_ip_slice(&ip)
    }

    /// Reads the key from an already sliced IP packet.
    pub fn from_ip_slice(ip: &IpSlice<'_>) -> Result<FlowKey, FlowError> {
        let proto = ip.payload_ip_number();
        let payload = ip.payload().payload;
        let transport = if has_transport_header(ip) {
            transport_of(proto, payload)?
        } else {
            Transport::Other
        };
        Ok(FlowKey {
            src: ip.source_addr(),
            dst: ip.destination_addr(),
            proto: proto.0,
            transport,
        })
    }

    /// The key of the reply direction.
    pub fn reversed(&self) -> FlowKey {
        FlowKey {
            src: self.dst,
            dst: self.src,
            proto: self.proto,
            transport: match self.transport {
                Transport::Ports { src, dst } => Transport::Ports { src: dst, dst: src },
                t => t,
            },
        }
    }

    /// Source port, or 0 when the protocol has none.
    pub fn src_port(&self) -> u16 {
        match self.transport {
            Transport::Ports { src, .. } => src,
            _ => 0,
        }
    }

    /// Destination port, or 0 when the protocol has none.
    pub fn dst_port(&self) -> u16 {
        match self.transport {
            Transport::Ports { dst, .. } => dst,
            _ => 0,
        }
    }

    /// A 32-bit hash of the key, stable across runs and platforms, for ECMP, VXLAN source
    /// ports and RSS-like spreading. With `symmetric`, both directions of a flow hash alike.
    pub fn hash(&self, symmetric: bool) -> u32 {
        let (mut a, mut b) = (self.src, self.dst);
        let (mut pa, mut pb) = (self.src_port(), self.dst_port());
        if symmetric && (a, pa) > (b, pb) {
            core::mem::swap(&mut a, &mut b);
            core::mem::swap(&mut pa, &mut pb);
        }
        // FNV-1a over the fields, then a murmur3 finaliser for avalanche.
        let mut h: u32 = 0x811c_9dc5;
        let mut eat = |bytes: &[u8]| {
            for &x in bytes {
                h ^= u32::from(x);
                h = h.wrapping_mul(0x0100_0193);
            }
        };
        for addr in [a, b] {
            match addr {
                IpAddr::V4(v4) => eat(&v4.octets()),
                IpAddr::V6(v6) => eat(&v6.octets()),
            }
        }
        eat(&pa.to_be_bytes());
        eat(&pb.to_be_bytes());
        eat(&[self.proto]);
        if let Transport::Icmp { ty, code, id } = self.transport {
            eat(&[ty, code]);
            eat(&id.to_be_bytes());
        }
        h ^= h >> 16;
        h = h.wrapping_mul(0x85eb_ca6b);
        h ^= h >> 13;
        h = h.wrapping_mul(0xc2b2_ae35);
        h ^ (h >> 16)
    }
}

fn transport_of(proto: IpNumber, payload: &[u8]) -> Result<Transport, FlowError> {
    const TCP: u8 = 6;
    const UDP: u8 = 17;
    const DCCP: u8 = 33;
    const SCTP: u8 = 132;
    const UDPLITE: u8 = 136;
    const ICMP: u8 = 1;
    const ICMPV6: u8 = 58;
    match proto.0 {
        TCP | UDP | DCCP | SCTP | UDPLITE => {
            let need = if proto.0 == TCP { 20 } else { 4 };
            if payload.len() < need {
                return Err(FlowError::TruncatedTransport);
            }
            Ok(Transport::Ports {
                src: u16::from_be_bytes([payload[0], payload[1]]),
                dst: u16::from_be_bytes([payload[2], payload[3]]),
            })
        }
        ICMP | ICMPV6 => {
            if payload.len() < 8 {
                return Err(FlowError::TruncatedTransport);
            }
            let (ty, code) = (payload[0], payload[1]);
            // Echo request/reply carry an identifier that tells flows apart (RFC 792, RFC 4443).
            let is_echo = if proto.0 == ICMP {
                matches!(ty, 0 | 8 | 13 | 14 | 15 | 16)
            } else {
                matches!(ty, 128 | 129)
            };
            let id = if is_echo {
                u16::from_be_bytes([payload[4], payload[5]])
            } else {
                0
            };
            Ok(Transport::Icmp { ty, code, id })
        }
        _ => Ok(Transport::Other),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use alloc::vec::Vec;
    use core::net::{Ipv4Addr, Ipv6Addr};
    use etherparse::PacketBuilder;

    fn build(b: etherparse::PacketBuilderStep<etherparse::UdpHeader>, payload: &[u8]) -> Vec<u8> {
        let mut out = Vec::new();
        b.write(&mut out, payload).unwrap();
        out
    }

    #[test]
    fn udp_v4() {
        let p = build(
            PacketBuilder::ipv4([192, 0, 2, 1], [198, 51, 100, 7], 64).udp(4500, 4501),
            b"x",
        );
        let k = FlowKey::from_ip(&p).unwrap();
        assert_eq!(k.src, IpAddr::V4(Ipv4Addr::new(192, 0, 2, 1)));
        assert_eq!(k.dst, IpAddr::V4(Ipv4Addr::new(198, 51, 100, 7)));
        assert_eq!(k.proto, 17);
        assert_eq!(
            k.transport,
            Transport::Ports {
                src: 4500,
                dst: 4501
            }
        );
        assert_eq!(k.reversed().reversed(), k);
        assert_eq!(k.hash(true), k.reversed().hash(true));
        assert_ne!(k.hash(false), k.reversed().hash(false));
    }

    #[test]
    fn tcp_v6_in_ethernet_with_vlan() {
        let mut out = Vec::new();
        PacketBuilder::ethernet2([1, 2, 3, 4, 5, 6], [7, 8, 9, 10, 11, 12])
            .single_vlan(etherparse::VlanId::try_new(42).unwrap())
            .ipv6(
                Ipv6Addr::LOCALHOST.octets(),
                "2001:db8::1".parse::<Ipv6Addr>().unwrap().octets(),
                64,
            )
            .tcp(1234, 443, 1, 100)
            .write(&mut out, b"")
            .unwrap();
        let k = FlowKey::from_ethernet(&out).unwrap();
        assert_eq!(k.proto, 6);
        assert_eq!(
            k.transport,
            Transport::Ports {
                src: 1234,
                dst: 443
            }
        );
        let mut m = crate::Meta::default();
        assert!(m.parse_ethernet(&out));
        assert_eq!(
            (m.l2, m.l3, m.l4, m.vlan),
            (Some(0), Some(18), Some(58), Some(42))
        );
    }

    #[test]
    fn icmp_echo_id() {
        let mut out = Vec::new();
        PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .icmpv4_echo_request(0x1234, 1)
            .write(&mut out, b"ping")
            .unwrap();
        let k = FlowKey::from_ip(&out).unwrap();
        assert_eq!(
            k.transport,
            Transport::Icmp {
                ty: 8,
                code: 0,
                id: 0x1234
            }
        );
        let mut m = crate::Meta::default();
        assert!(m.parse_ip(&out));
        assert_eq!((m.l3, m.l4), (Some(0), Some(20)));
    }

    #[test]
    fn garbage_and_truncation() {
        assert_eq!(FlowKey::from_ip(&[]), Err(FlowError::NotIp));
        assert_eq!(FlowKey::from_ip(&[0x45; 10]), Err(FlowError::NotIp));
        assert!(FlowKey::from_ethernet(&[0; 3]).is_err());
        // A TCP packet whose IP total length leaves only 4 bytes of TCP header.
        let p = build(
            PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 1).udp(1, 2),
            b"",
        );
        let mut t = p[..24].to_vec();
        t[9] = 6; // protocol TCP
        t[2..4].copy_from_slice(&24u16.to_be_bytes());
        assert_eq!(FlowKey::from_ip(&t), Err(FlowError::TruncatedTransport));
        let mut m = crate::Meta::default();
        assert!(!m.parse_ip(&[0x60]));
        assert_eq!(m.l3, None);
    }

    #[test]
    fn non_first_fragment_has_no_ports() {
        let mut p = build(
            PacketBuilder::ipv4([1, 1, 1, 1], [2, 2, 2, 2], 1).udp(1, 2),
            b"12345678",
        );
        // fragment offset 8 units, recompute the header checksum
        p[6] = 0;
        p[7] = 1;
        p[10] = 0;
        p[11] = 0;
        let c = crate::checksum::internet(&p[..20]);
        p[10..12].copy_from_slice(&c.to_be_bytes());
        let k = FlowKey::from_ip(&p).unwrap();
        assert_eq!(k.transport, Transport::Other);
        assert_eq!(k.src_port(), 0);
    }
}
