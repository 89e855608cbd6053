//! The outer IPv4/IPv6 and UDP headers ESP is carried in, written and read in place.

use core::net::IpAddr;
use gatekit_packet::checksum;

pub(crate) const IPV4_HDR: usize = 20;
pub(crate) const IPV6_HDR: usize = 40;
pub(crate) const UDP_HDR: usize = 8;
pub(crate) const IPPROTO_UDP: u8 = 17;
pub(crate) const DEFAULT_TTL: u8 = 64;

/// Writes an IPv4 header without options (RFC 791) with its checksum.
///
/// The header is built and summed in registers and stored once: the headroom it lands in is
/// often a cache line nothing has touched yet, and summing it back from memory would wait on
/// that line.
pub(crate) fn write_ipv4(
    h: &mut [u8],
    src: [u8; 4],
    dst: [u8; 4],
    proto: u8,
    total_len: u16,
    tos: u8,
    id: u16,
) {
    let word = |hi: u8, lo: u8| u32::from(u16::from_be_bytes([hi, lo]));
    // RFC 1071: the one's-complement sum of the ten 16-bit words, the checksum word as zero.
    // Nine words of at most 0xffff cannot overflow a u32; two folds absorb every carry.
    let sum = word(0x45, tos)
        + u32::from(total_len)
        + u32::from(id)
        + word(DEFAULT_TTL, proto)
        + word(src[0], src[1])
        + word(src[2], src[3])
        + word(dst[0], dst[1])
        + word(dst[2], dst[3]);
    let sum = (sum & 0xffff) + (sum >> 16);
    let sum = (sum & 0xffff) + (sum >> 16);
    let c = !(sum as u16);
    let mut hdr = [0u8; IPV4_HDR];
    hdr[0] = 0x45;
    hdr[1] = tos;
    hdr[2..4].copy_from_slice(&total_len.to_be_bytes());
    hdr[4..6].copy_from_slice(&id.to_be_bytes());
    hdr[8] = DEFAULT_TTL;
    hdr[9] = proto;
    hdr[10..12].copy_from_slice(&c.to_be_bytes());
    hdr[12..16].copy_from_slice(&src);
    hdr[16..20].copy_from_slice(&dst);
    h[..IPV4_HDR].copy_from_slice(&hdr);
}

/// Writes an IPv6 header (RFC 8200).
pub(crate) fn write_ipv6(
    h: &mut [u8],
    src: [u8; 16],
    dst: [u8; 16],
    next_header: u8,
    payload_len: u16,
    traffic_class: u8,
) {
    h[0] = 0x60 | traffic_class >> 4;
    h[1] = traffic_class << 4;
    h[2..4].copy_from_slice(&[0, 0]);
    h[4..6].copy_from_slice(&payload_len.to_be_bytes());
    h[6] = next_header;
    h[7] = DEFAULT_TTL;
    h[8..24].copy_from_slice(&src);
    h[24..40].copy_from_slice(&dst);
}

/// Writes a UDP header with a zero checksum.
pub(crate) fn write_udp(h: &mut [u8], sport: u16, dport: u16, len: u16) {
    h[0..2].copy_from_slice(&sport.to_be_bytes());
    h[2..4].copy_from_slice(&dport.to_be_bytes());
    h[4..6].copy_from_slice(&len.to_be_bytes());
    h[6..8].copy_from_slice(&[0, 0]);
}

/// The UDP checksum over IPv6 (RFC 8200 §8.1): mandatory there, unlike IPv4 where RFC 3948
/// §3.1 has the sender put zero.
pub(crate) fn udp6_checksum(src: [u8; 16], dst: [u8; 16], udp: &[u8]) -> u16 {
    let acc = checksum::pseudo_v6(src, dst, IPPROTO_UDP, udp.len() as u32);
    match checksum::fold(checksum::sum(acc, udp)) {
        0xffff => 0xffff,
        c => !c,
    }
}

/// The DSCP/ECN byte of an IP packet (0 if it is not one), copied to the outer header in
/// tunnel mode (RFC 4301 §5.1.2.1, RFC 6040 normal mode).
pub(crate) fn tos_of(packet: &[u8]) -> u8 {
    match packet {
        [b0, b1, ..] if b0 >> 4 == 4 => *b1,
        [b0, b1, ..] if b0 >> 4 == 6 => (b0 << 4) | (b1 >> 4),
        _ => 0,
    }
}

/// Where the parts of an outer packet are.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outer {
    pub src: IpAddr,
    pub dst: IpAddr,
    /// Length of the IP header (with IPv4 options or IPv6 extension headers).
    pub ip_len: usize,
    /// The protocol after the IP header.
    pub proto: u8,
    /// Length of the IP packet (the buffer may hold link padding behind it).
    pub total_len: usize,
}

/// Reads the outer IP header. `None` if it does not parse or is a fragment (ESP packets are
/// not reassembled here).
pub(crate) fn parse_outer(data: &[u8]) -> Result<Outer, gatekit_packet::DropReason> {
    use gatekit_packet::DropReason;
    if let Some(ip) = gatekit_packet::PlainIpv4::parse(data) {
        if ip.is_fragment() {
            return Err(DropReason::Unsupported);
        }
        return Ok(Outer {
            src: ip.src().into(),
            dst: ip.dst().into(),
            ip_len: ip.header_len(),
            proto: ip.proto(),
            total_len: ip.total_len(),
        });
    }
    let ip = etherparse::IpSlice::from_slice(data).map_err(|e| match e {
        etherparse::err::ip::SliceError::Len(_) => DropReason::Truncated,
        _ => DropReason::Malformed,
    })?;
    let payload = ip.payload();
    if payload.fragmented {
        return Err(DropReason::Unsupported);
    }
    let ip_len = payload.payload.as_ptr() as usize - data.as_ptr() as usize;
    Ok(Outer {
        src: ip.source_addr(),
        dst: ip.destination_addr(),
        ip_len,
        proto: payload.ip_number.0,
        total_len: ip_len + payload.payload.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatekit_packet::DropReason;

    #[test]
    fn ipv4_header_checks_out_with_etherparse() {
        let mut h = [0u8; 20];
        write_ipv4(&mut h, [192, 0, 2, 1], [198, 51, 100, 2], 50, 120, 0xb8, 7);
        let (hdr, _) = etherparse::Ipv4Header::from_slice(&h).unwrap();
        assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
        assert_eq!(hdr.total_len, 120);
        assert_eq!(hdr.protocol.0, 50);
        assert_eq!(hdr.dscp.value() << 2 | hdr.ecn.value(), 0xb8);
    }

    proptest::proptest! {
        /// The checksum summed in registers is the one etherparse computes over the bytes
        /// (all-ones addresses and lengths included: the carries must all fold back in).
        #[test]
        fn ipv4_checksum_matches_etherparse_for_any_fields(
            src: [u8; 4], dst: [u8; 4], proto: u8, total: u16, tos: u8, id: u16,
        ) {
            let mut h = [0xa5u8; 24];
            write_ipv4(&mut h, src, dst, proto, total, tos, id);
            let (hdr, _) = etherparse::Ipv4Header::from_slice(&h).unwrap();
            proptest::prop_assert_eq!(hdr.header_checksum, hdr.calc_header_checksum());
            proptest::prop_assert_eq!(checksum::internet(&h[..IPV4_HDR]), 0);
            proptest::prop_assert_eq!((hdr.source, hdr.destination), (src, dst));
            proptest::prop_assert_eq!((hdr.total_len, hdr.identification), (total, id));
            proptest::prop_assert_eq!(&h[20..], &[0xa5u8; 4][..]);
        }

        /// The outer header as etherparse reads it (the general path): the plain IPv4 fast
        /// path gives the same result, or the same error, for damaged headers too.
        #[test]
        fn outer_header_reads_as_etherparse_reads_it(
            proto in proptest::sample::select(vec![17u8, 50, 51, 6]),
            len in 20usize..80,
            ihl in proptest::sample::select(vec![0x45u8, 0x46, 0x44, 0x4f, 0x65]),
            damage in proptest::collection::vec((0usize..24, proptest::num::u8::ANY), 0..3),
            cut in 0usize..8,
            frag in proptest::sample::select(vec![0u16, 0x4000, 0x2000, 0x6000, 0x0001, 0x4001]),
        ) {
            let mut p = vec![0u8; len + 4];
            write_ipv4(&mut p, [192, 0, 2, 1], [198, 51, 100, 2], proto, len as u16, 0, 9);
            p[0] = ihl;
            p[6..8].copy_from_slice(&frag.to_be_bytes());
            for (at, v) in damage {
                p[at] = v;
            }
            p.truncate(p.len() - cut);
            let general = etherparse::IpSlice::from_slice(&p)
                .map_err(|e| match e {
                    etherparse::err::ip::SliceError::Len(_) => DropReason::Truncated,
                    _ => DropReason::Malformed,
                })
                .and_then(|ip| {
                    let payload = ip.payload();
                    if payload.fragmented {
                        return Err(DropReason::Unsupported);
                    }
                    let ip_len = payload.payload.as_ptr() as usize - p.as_ptr() as usize;
                    Ok((ip.source_addr(), ip.destination_addr(), ip_len, payload.ip_number.0,
                        ip_len + payload.payload.len()))
                });
            let fast = parse_outer(&p).map(|o| (o.src, o.dst, o.ip_len, o.proto, o.total_len));
            proptest::prop_assert_eq!(fast, general, "{:02x?}", p);
        }
    }

    #[test]
    fn ipv6_udp_checksum_matches_etherparse() {
        let src = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 1];
        let dst = [0x20, 1, 0xd, 0xb8, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 2];
        let mut udp = [0u8; 13];
        write_udp(&mut udp, 4500, 4501, 13);
        udp[8..].copy_from_slice(&[1, 2, 3, 4, 5]);
        let c = udp6_checksum(src, dst, &udp);
        let ip = etherparse::Ipv6Header {
            source: src,
            destination: dst,
            next_header: etherparse::IpNumber::UDP,
            payload_length: 13,
            hop_limit: 64,
            ..Default::default()
        };
        let hdr = etherparse::UdpHeader::with_ipv6_checksum(4500, 4501, &ip, &udp[8..]).unwrap();
        assert_eq!(c, hdr.checksum);
        let mut h = [0u8; 40];
        write_ipv6(&mut h, src, dst, 17, 13, 0xb8);
        assert_eq!(tos_of(&h), 0xb8);
    }
}
