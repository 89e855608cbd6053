//! Outer IPv4/IPv6 headers: a per-tunnel template built once with etherparse, patched per
//! packet (length, and the IPv4 header checksum by RFC 1624), and the checked parse of
//! received outer headers.

use core::net::IpAddr;
use etherparse::{IpNumber, IpSlice, Ipv4Header, Ipv4HeaderSlice, Ipv6FlowLabel, Ipv6Header};
use gatekit_packet::{DropReason, checksum};

/// Room for the largest template: IPv6 (40) + UDP (8) + VXLAN (8), or IPv6 + GRE (16).
pub(crate) const MAX_TEMPLATE: usize = 56;

/// An outer IP header (and the tunnel header after it) prepared once per tunnel.
#[derive(Debug, Clone)]
pub(crate) struct Template {
    pub bytes: [u8; MAX_TEMPLATE],
    /// Length of the IP header at the front.
    pub ip_len: usize,
    /// Length of the whole template.
    pub len: usize,
    /// IPv4 header checksum for a total length field of 0 (ignored for IPv6).
    csum_base: u16,
    v4: bool,
}

impl Template {
    /// An outer header from `local` to `remote` with protocol `proto`, followed by `tunnel`
    /// (GRE or UDP+VXLAN) bytes. The families must match (checked by the caller).
    pub fn new(local: IpAddr, remote: IpAddr, proto: IpNumber, ttl: u8, tunnel: &[u8]) -> Self {
        let mut bytes = [0u8; MAX_TEMPLATE];
        let (ip_len, csum_base, v4) = match (local, remote) {
            (IpAddr::V4(l), IpAddr::V4(r)) => {
                // Identification 0 with DF set: an atomic datagram (RFC 6864 §4.1); the
                // tunnel itself enforces its MTU, so the outer packet is never fragmented.
                let mut h = Ipv4Header {
                    total_len: 0,
                    time_to_live: ttl,
                    protocol: proto,
                    source: l.octets(),
                    destination: r.octets(),
                    dont_fragment: true,
                    ..Default::default()
                };
                h.header_checksum = h.calc_header_checksum();
                bytes[..20].copy_from_slice(&h.to_bytes());
                (20, h.header_checksum, true)
            }
            (l, r) => {
                let h = Ipv6Header {
                    traffic_class: 0,
                    flow_label: Ipv6FlowLabel::ZERO,
                    payload_length: 0,
                    next_header: proto,
                    hop_limit: ttl,
                    source: v6_octets(l),
                    destination: v6_octets(r),
                };
                bytes[..40].copy_from_slice(&h.to_bytes());
                (40, 0, false)
            }
        };
        let len = ip_len + tunnel.len();
        bytes[ip_len..len].copy_from_slice(tunnel);
        Template {
            bytes,
            ip_len,
            len,
            csum_base,
            v4,
        }
    }

    /// The template bytes.
    pub fn header(&self) -> &[u8] {
        &self.bytes[..self.len]
    }

    /// Sets the length fields of the IP header at the front of `hdr` (a copy of this
    /// template) for a packet of `total` bytes, outer header included.
    #[inline]
    pub fn patch_len(&self, hdr: &mut [u8], total: usize) {
        if self.v4 {
            let total = total as u16;
            hdr[2..4].copy_from_slice(&total.to_be_bytes());
            let c = checksum::update16(self.csum_base, 0, total);
            hdr[10..12].copy_from_slice(&c.to_be_bytes());
        } else {
            let payload = (total - 40) as u16;
            hdr[4..6].copy_from_slice(&payload.to_be_bytes());
        }
    }

    /// The pseudo-header sum for a transport checksum of `len` bytes after the IP header.
    pub fn pseudo(&self, len: usize) -> u64 {
        let b = &self.bytes;
        if self.v4 {
            let (s, d) = ([b[12], b[13], b[14], b[15]], [b[16], b[17], b[18], b[19]]);
            checksum::pseudo_v4(s, d, b[9], len as u16)
        } else {
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&b[8..24]);
            d.copy_from_slice(&b[24..40]);
            checksum::pseudo_v6(s, d, b[6], len as u32)
        }
    }
}

/// The IPv6 form of an address (IPv4 addresses map to ::ffff:a.b.c.d; callers never mix
/// families, this only keeps the function total).
pub(crate) fn v6_octets(a: IpAddr) -> [u8; 16] {
    match a {
        IpAddr::V6(v6) => v6.octets(),
        IpAddr::V4(v4) => v4.to_ipv6_mapped().octets(),
    }
}

/// A received outer IP header.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct Outer {
    pub src: IpAddr,
    pub dst: IpAddr,
    pub proto: u8,
    /// Bytes before the payload (IP header and IPv6 extension headers).
    pub header_len: usize,
    /// Payload bytes the IP header announces.
    pub payload_len: usize,
}

/// Parses the outer IP header at the start of `data`; fragments are not handled here (the
/// data path reassembles before decapsulating).
#[inline]
pub(crate) fn parse(data: &[u8]) -> Result<Outer, DropReason> {
    // IPv4, by far the common underlay, is read from its fixed fields when the header is
    // well formed (what etherparse accepts, see `PlainIpv4`); anything else goes
    // through etherparse's header slice, which says what is wrong. IPv6 needs the extension
    // header walk of the full slicer.
    if let Some(ip) = gatekit_packet::PlainIpv4::parse(data) {
        let header_len = ip.header_len();
        if checksum::internet(&data[..header_len]) != 0 {
            return Err(DropReason::BadChecksum);
        }
        if ip.is_fragment() {
            return Err(DropReason::Unsupported);
        }
        return Ok(Outer {
            src: ip.src().into(),
            dst: ip.dst().into(),
            proto: ip.proto(),
            header_len,
            payload_len: ip.total_len() - header_len,
        });
    }
    if data.first().is_some_and(|b| b >> 4 == 4) {
        let h = Ipv4HeaderSlice::from_slice(data).map_err(|e| match e {
            etherparse::err::ipv4::HeaderSliceError::Len(_) => DropReason::Truncated,
            _ => DropReason::Malformed,
        })?;
        let header_len = h.slice().len();
        let total = usize::from(h.total_len());
        if total < header_len {
            return Err(DropReason::Malformed);
        }
        if total > data.len() {
            return Err(DropReason::Truncated);
        }
        if checksum::internet(h.slice()) != 0 {
            return Err(DropReason::BadChecksum);
        }
        if h.is_fragmenting_payload() {
            return Err(DropReason::Unsupported);
        }
        return Ok(Outer {
            src: IpAddr::V4(h.source_addr()),
            dst: IpAddr::V4(h.destination_addr()),
            proto: h.protocol().0,
            header_len,
            payload_len: total - header_len,
        });
    }
    let ip = IpSlice::from_slice(data).map_err(|e| match e {
        etherparse::err::ip::SliceError::Len(_) => DropReason::Truncated,
        _ => DropReason::Malformed,
    })?;
    let payload = ip.payload();
    if payload.fragmented {
        return Err(DropReason::Unsupported);
    }
    let header_len = payload.payload.as_ptr() as usize - data.as_ptr() as usize;
    Ok(Outer {
        src: ip.source_addr(),
        dst: ip.destination_addr(),
        proto: payload.ip_number.0,
        header_len,
        payload_len: payload.payload.len(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn template_matches_etherparse_build() {
        let t = Template::new(
            "192.0.2.1".parse().unwrap(),
            "198.51.100.2".parse().unwrap(),
            IpNumber::GRE,
            64,
            &[0, 0, 0x08, 0],
        );
        let mut hdr = t.header().to_vec();
        t.patch_len(&mut hdr, 24 + 100);
        // etherparse's own header for the same packet.
        let mut want =
            Ipv4Header::new(104, 64, IpNumber::GRE, [192, 0, 2, 1], [198, 51, 100, 2]).unwrap();
        want.header_checksum = want.calc_header_checksum();
        assert_eq!(&hdr[..20], &want.to_bytes()[..]);
        assert_eq!(checksum::internet(&hdr[..20]), 0);

        let t6 = Template::new(
            "2001:db8::1".parse().unwrap(),
            "2001:db8::2".parse().unwrap(),
            IpNumber::GRE,
            9,
            &[0, 0, 0x65, 0x58],
        );
        let mut h6 = t6.header().to_vec();
        t6.patch_len(&mut h6, 44 + 60);
        let (p, _) = Ipv6Header::from_slice(&h6).unwrap();
        assert_eq!(
            (p.payload_length, p.hop_limit, p.next_header),
            (64, 9, IpNumber::GRE)
        );
    }

    #[test]
    fn parse_rejects() {
        assert_eq!(parse(&[]), Err(DropReason::Truncated));
        assert_eq!(parse(&[0x75; 30]), Err(DropReason::Malformed));
        let mut h = Ipv4Header::new(0, 1, IpNumber::GRE, [1, 1, 1, 1], [2, 2, 2, 2]).unwrap();
        h.header_checksum = h.calc_header_checksum() ^ 1;
        assert_eq!(parse(&h.to_bytes()), Err(DropReason::BadChecksum));
        h.header_checksum = 0;
        h.more_fragments = true;
        h.header_checksum = h.calc_header_checksum();
        assert_eq!(parse(&h.to_bytes()), Err(DropReason::Unsupported));
    }
}
