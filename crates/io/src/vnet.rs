//! The virtio-net header that a TUN/TAP device with `IFF_VNET_HDR` puts in front of every
//! packet, and the two things it makes us do: complete checksums the kernel left partial, and
//! cut GSO super-packets into MTU-sized segments (and the reverse, coalescing TCP segments
//! into one super-packet for the kernel).
//!
//! Layout (`struct virtio_net_hdr`, virtio 1.x §5.1.6, in the host's byte order for a TUN
//! device in legacy mode, which is what `TUNSETVNETHDRSZ` = 10 gives):
//!
//! ```text
//!  0      1         2         4          6            8             10
//!  | flags | gso_type | hdr_len | gso_size | csum_start | csum_offset |
//! ```
//!
//! Everything here is pure computation over byte slices: no `unsafe`, no I/O, never a panic.

use gatekit_packet::checksum;

/// Length of the header in front of each packet.
pub const VNET_HDR_LEN: usize = 10;

/// `flags`: the checksum at `csum_start + csum_offset` holds only the pseudo-header sum and
/// must be completed over `csum_start..`.
pub const F_NEEDS_CSUM: u8 = 1;
/// `flags`: the checksum was verified (or need not be).
pub const F_DATA_VALID: u8 = 2;

/// `gso_type` values (the low 7 bits; bit 7 is the ECN flag).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[non_exhaustive]
pub enum GsoType {
    /// Not a GSO packet.
    None,
    /// TCP over IPv4 (TSO).
    TcpV4,
    /// UDP fragmentation offload (IP fragments); not produced unless asked for.
    Udp,
    /// TCP over IPv6 (TSO).
    TcpV6,
    /// UDP segmentation (USO): one UDP datagram per segment.
    UdpL4,
}

impl GsoType {
    fn from_u8(v: u8) -> Option<Self> {
        match v & 0x7f {
            0 => Some(GsoType::None),
            1 => Some(GsoType::TcpV4),
            3 => Some(GsoType::Udp),
            4 => Some(GsoType::TcpV6),
            5 => Some(GsoType::UdpL4),
            _ => None,
        }
    }
    fn as_u8(self) -> u8 {
        match self {
            GsoType::None => 0,
            GsoType::TcpV4 => 1,
            GsoType::Udp => 3,
            GsoType::TcpV6 => 4,
            GsoType::UdpL4 => 5,
        }
    }
}

/// Why a vnet packet could not be handled. The caller counts it as a drop.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum VnetError {
    /// Fewer bytes than the header, or than the headers the GSO fields announce.
    #[error("truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes there were.
        available: usize,
    },
    /// An unknown `gso_type`, a zero `gso_size`, or headers that disagree with the GSO type.
    #[error("malformed virtio-net packet: {0}")]
    Malformed(&'static str),
    /// A GSO type this crate does not segment (UFO, IPv6 extension headers).
    #[error("unsupported: {0}")]
    Unsupported(&'static str),
    /// The sink had no room (no free buffer) for segment number `segment`.
    #[error("no buffer for segment {segment}")]
    NoBuffer {
        /// Index of the segment that found no buffer.
        segment: usize,
    },
}

/// The virtio-net header of one packet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct VnetHeader {
    /// [`F_NEEDS_CSUM`], [`F_DATA_VALID`].
    pub flags: u8,
    /// The GSO type of the packet.
    pub gso_type: GsoType,
    /// Whether the ECN bit of `gso_type` was set (TCP with CWR seen).
    pub ecn: bool,
    /// Length of the headers (link + network + transport) of a GSO packet.
    pub hdr_len: u16,
    /// Payload bytes per segment of a GSO packet.
    pub gso_size: u16,
    /// Where checksumming starts (with [`F_NEEDS_CSUM`]).
    pub csum_start: u16,
    /// Offset of the checksum field from `csum_start`.
    pub csum_offset: u16,
}

impl Default for VnetHeader {
    fn default() -> Self {
        VnetHeader {
            flags: 0,
            gso_type: GsoType::None,
            ecn: false,
            hdr_len: 0,
            gso_size: 0,
            csum_start: 0,
            csum_offset: 0,
        }
    }
}

impl VnetHeader {
    /// Reads the header at the front of `b`.
    pub fn parse(b: &[u8]) -> Result<Self, VnetError> {
        let Some(h) = b.get(..VNET_HDR_LEN) else {
            return Err(VnetError::Truncated {
                needed: VNET_HDR_LEN,
                available: b.len(),
            });
        };
        let gso_type = GsoType::from_u8(h[1]).ok_or(VnetError::Malformed("unknown gso_type"))?;
        Ok(VnetHeader {
            flags: h[0],
            gso_type,
            ecn: h[1] & 0x80 != 0,
            hdr_len: u16::from_ne_bytes([h[2], h[3]]),
            gso_size: u16::from_ne_bytes([h[4], h[5]]),
            csum_start: u16::from_ne_bytes([h[6], h[7]]),
            csum_offset: u16::from_ne_bytes([h[8], h[9]]),
        })
    }

    /// Writes the header into the first [`VNET_HDR_LEN`] bytes of `out` (does nothing if
    /// `out` is shorter).
    pub fn emit(&self, out: &mut [u8]) {
        let Some(h) = out.get_mut(..VNET_HDR_LEN) else {
            return;
        };
        h[0] = self.flags;
        h[1] = self.gso_type.as_u8() | if self.ecn { 0x80 } else { 0 };
        h[2..4].copy_from_slice(&self.hdr_len.to_ne_bytes());
        h[4..6].copy_from_slice(&self.gso_size.to_ne_bytes());
        h[6..8].copy_from_slice(&self.csum_start.to_ne_bytes());
        h[8..10].copy_from_slice(&self.csum_offset.to_ne_bytes());
    }
}

/// Completes a partial checksum in place (the [`F_NEEDS_CSUM`] case of a packet that is not
/// GSO): the field at `csum_start + csum_offset` holds the pseudo-header sum, and the result
/// is the checksum of everything from `csum_start` to the end.
pub fn complete_checksum(hdr: &VnetHeader, packet: &mut [u8]) -> Result<(), VnetError> {
    let start = usize::from(hdr.csum_start);
    let field = start + usize::from(hdr.csum_offset);
    if field + 2 > packet.len() {
        return Err(VnetError::Truncated {
            needed: field + 2,
            available: packet.len(),
        });
    }
    let c = !checksum::fold(checksum::sum(0, &packet[start..]));
    packet[field..field + 2].copy_from_slice(&c.to_be_bytes());
    Ok(())
}

/// Where the network header starts in a frame: 0 for TUN, after the Ethernet header (and any
/// 802.1Q/802.1ad tags) for TAP.
pub fn l3_offset_ethernet(frame: &[u8]) -> Result<usize, VnetError> {
    let mut off = 12;
    loop {
        let Some(t) = frame.get(off..off + 2) else {
            return Err(VnetError::Truncated {
                needed: off + 2,
                available: frame.len(),
            });
        };
        match u16::from_be_bytes([t[0], t[1]]) {
            0x8100 | 0x88a8 => off += 4,
            0x0800 | 0x86dd => return Ok(off + 2),
            _ => return Err(VnetError::Unsupported("GSO frame not IPv4/IPv6")),
        }
    }
}

/// The headers of a GSO packet, located and checked.
#[derive(Debug, Clone, Copy)]
struct Layout {
    l3: usize,
    l4: usize,
    /// End of the transport header: payload starts here.
    end: usize,
    v6: bool,
    tcp: bool,
}

fn layout(packet: &[u8], l3: usize, tcp: bool) -> Result<Layout, VnetError> {
    let trunc = |needed: usize| VnetError::Truncated {
        needed,
        available: packet.len(),
    };
    let first = *packet.get(l3).ok_or(trunc(l3 + 1))?;
    let (l4, proto, v6) = match first >> 4 {
        4 => {
            let ihl = usize::from(first & 0x0f) * 4;
            if ihl < 20 {
                return Err(VnetError::Malformed("IPv4 header length below 20"));
            }
            let proto = *packet.get(l3 + 9).ok_or(trunc(l3 + 10))?;
            (l3 + ihl, proto, false)
        }
        6 => {
            let nh = *packet.get(l3 + 6).ok_or(trunc(l3 + 7))?;
            (l3 + 40, nh, true)
        }
        _ => return Err(VnetError::Malformed("GSO packet not IPv4/IPv6")),
    };
    let want = if tcp { 6 } else { 17 };
    if proto != want {
        return Err(if v6 {
            VnetError::Unsupported("IPv6 extension headers in a GSO packet")
        } else {
            VnetError::Malformed("transport protocol does not match gso_type")
        });
    }
    let end = if tcp {
        let off = *packet.get(l4 + 12).ok_or(trunc(l4 + 13))?;
        let thl = usize::from(off >> 4) * 4;
        if thl < 20 {
            return Err(VnetError::Malformed("TCP header length below 20"));
        }
        l4 + thl
    } else {
        l4 + 8
    };
    if end > packet.len() {
        return Err(trunc(end));
    }
    Ok(Layout {
        l3,
        l4,
        end,
        v6,
        tcp,
    })
}

/// The pseudo-header sum (RFC 768, RFC 8200 §8.1) for a transport header of `l4_len` bytes
/// behind the IPv4 (no options needed: addresses are at fixed offsets) or IPv6 header `ip`.
pub(crate) fn pseudo_sum(ip: &[u8], v6: bool, proto: u8, l4_len: usize) -> u64 {
    if v6 {
        let mut s = [0u8; 16];
        let mut d = [0u8; 16];
        s.copy_from_slice(&ip[8..24]);
        d.copy_from_slice(&ip[24..40]);
        checksum::pseudo_v6(s, d, proto, l4_len as u32)
    } else {
        let mut s = [0u8; 4];
        let mut d = [0u8; 4];
        s.copy_from_slice(&ip[12..16]);
        d.copy_from_slice(&ip[16..20]);
        checksum::pseudo_v4(s, d, proto, l4_len as u16)
    }
}

/// Cuts a GSO super-packet (headers then payload, as the kernel hands it over) into segments
/// of at most `gso_size` payload bytes each, with lengths, IPv4 ids, TCP sequence numbers,
/// flags and every checksum fixed up, as the kernel's own software GSO would.
///
/// A packet with [`GsoType::None`] is one segment, its checksum completed if the header asks
/// for it. The caller loops over `0..count()`, finds a buffer of `segment_len(i)` bytes for
/// each and has [`Segmenter::write`] fill it.
#[derive(Debug, Clone, Copy)]
pub struct Segmenter<'p> {
    hdr: VnetHeader,
    packet: &'p [u8],
    lay: Option<Layout>,
    fixed: Fixed,
    gso: usize,
    count: usize,
    ip_id: u16,
    seq: u32,
}

impl<'p> Segmenter<'p> {
    /// Checks the headers of `packet` (whose IP header starts at `l3`: 0 for TUN) against
    /// `hdr`.
    pub fn new(hdr: &VnetHeader, packet: &'p [u8], l3: usize) -> Result<Self, VnetError> {
        let tcp = match hdr.gso_type {
            GsoType::None => {
                return Ok(Segmenter {
                    hdr: *hdr,
                    packet,
                    lay: None,
                    fixed: Fixed::default(),
                    gso: packet.len(),
                    count: 1,
                    ip_id: 0,
                    seq: 0,
                });
            }
            GsoType::TcpV4 | GsoType::TcpV6 => true,
            GsoType::UdpL4 => false,
            GsoType::Udp => return Err(VnetError::Unsupported("UFO (IP fragmentation offload)")),
        };
        let gso = usize::from(hdr.gso_size);
        if gso == 0 {
            return Err(VnetError::Malformed("gso_size 0"));
        }
        let lay = layout(packet, l3, tcp)?;
        if tcp && lay.v6 != (hdr.gso_type == GsoType::TcpV6) {
            return Err(VnetError::Malformed("IP version does not match gso_type"));
        }
        let payload = packet.len() - lay.end;
        let ip_id = if lay.v6 {
            0
        } else {
            u16::from_be_bytes([packet[l3 + 4], packet[l3 + 5]])
        };
        let l4 = lay.l4;
        let seq = if tcp {
            u32::from_be_bytes([
                packet[l4 + 4],
                packet[l4 + 5],
                packet[l4 + 6],
                packet[l4 + 7],
            ])
        } else {
            0
        };
        Ok(Segmenter {
            hdr: *hdr,
            packet,
            lay: Some(lay),
            fixed: fixed_sums(packet, &lay),
            gso,
            count: payload.div_ceil(gso).max(1),
            ip_id,
            seq,
        })
    }

    /// Number of segments.
    pub fn count(&self) -> usize {
        self.count
    }

    fn chunk(&self, i: usize) -> (&'p [u8], &'p [u8]) {
        match self.lay {
            None => (&[], self.packet),
            Some(lay) => {
                let payload = &self.packet[lay.end..];
                let start = (i * self.gso).min(payload.len());
                let end = (start + self.gso).min(payload.len());
                (&self.packet[..lay.end], &payload[start..end])
            }
        }
    }

    /// Length of segment `i` (0 past the end).
    pub fn segment_len(&self, i: usize) -> usize {
        if i >= self.count {
            return 0;
        }
        let (h, p) = self.chunk(i);
        h.len() + p.len()
    }

    /// Writes segment `i` into `out`, which must be exactly `segment_len(i)` bytes.
    pub fn write(&self, i: usize, out: &mut [u8]) -> Result<(), VnetError> {
        let len = self.segment_len(i);
        if i >= self.count || out.len() != len {
            return Err(VnetError::NoBuffer { segment: i });
        }
        let (headers, chunk) = self.chunk(i);
        let h = headers.len();
        out[..h].copy_from_slice(headers);
        let Some(lay) = self.lay else {
            out[h..].copy_from_slice(chunk);
            if self.hdr.flags & F_NEEDS_CSUM != 0 {
                complete_checksum(&self.hdr, out)?;
            }
            return Ok(());
        };
        // The payload is summed while it is copied; the transport headers before it have an
        // even length (TCP's is a multiple of 4, UDP's is 8), so the sums simply add.
        let payload_sum = checksum::copy_and_sum(0, chunk, &mut out[h..]);
        // The checksums are the fixed sums plus the fields written here, added as values:
        // reading the header back would wait for the narrow stores just made to it.
        let l3 = lay.l3;
        let ip_len = len - l3;
        if lay.v6 {
            let pl = (ip_len - 40) as u16;
            out[l3 + 4..l3 + 6].copy_from_slice(&pl.to_be_bytes());
        } else {
            let id = self.ip_id.wrapping_add(i as u16);
            out[l3 + 2..l3 + 4].copy_from_slice(&(ip_len as u16).to_be_bytes());
            out[l3 + 4..l3 + 6].copy_from_slice(&id.to_be_bytes());
            let c = !checksum::fold(self.fixed.ip + ip_len as u64 + u64::from(id));
            out[l3 + 10..l3 + 12].copy_from_slice(&c.to_be_bytes());
        }
        let l4 = lay.l4;
        let l4_len = (len - l4) as u64;
        if lay.tcp {
            let s = self.seq.wrapping_add((i * self.gso) as u32);
            out[l4 + 4..l4 + 8].copy_from_slice(&s.to_be_bytes());
            let mut flags = headers[l4 + 13];
            if i + 1 != self.count {
                flags &= !(0x01 | 0x08); // FIN, PSH only on the last segment
            }
            if i > 0 {
                flags &= !0x80; // CWR only on the first
            }
            out[l4 + 13] = flags;
            let word = u16::from_be_bytes([headers[l4 + 12], flags]);
            let acc = self.fixed.l4 + l4_len + u64::from(s >> 16) + u64::from(s & 0xffff);
            let acc = checksum::add(acc + u64::from(word), payload_sum);
            let c = !checksum::fold(acc);
            out[l4 + 16..l4 + 18].copy_from_slice(&c.to_be_bytes());
        } else {
            out[l4 + 4..l4 + 6].copy_from_slice(&(l4_len as u16).to_be_bytes());
            // The length counts twice: in the pseudo-header and in the UDP header.
            let acc = checksum::add(self.fixed.l4 + 2 * l4_len, payload_sum);
            let mut c = !checksum::fold(acc);
            if c == 0 {
                c = 0xffff; // RFC 768: a computed zero is sent as all ones
            }
            out[l4 + 6..l4 + 8].copy_from_slice(&c.to_be_bytes());
        }
        Ok(())
    }
}

/// What every segment's checksums share, summed once per super-packet: the IPv4 header and
/// the transport header (with the pseudo-header's addresses and protocol), with the fields
/// that differ between segments (lengths, IPv4 id, TCP sequence number and flags, the
/// checksums) taken as zero. Both are folded to 16 bits: a segment adds its own fields to
/// them as plain integers.
#[derive(Debug, Clone, Copy, Default)]
struct Fixed {
    ip: u64,
    l4: u64,
}

fn fixed_sums(packet: &[u8], lay: &Layout) -> Fixed {
    let mut h = [0u8; 60];
    let ip = if lay.v6 {
        0
    } else {
        // IPv4: 20 to 60 bytes.
        let n = lay.l4 - lay.l3;
        h[..n].copy_from_slice(&packet[lay.l3..lay.l4]);
        h[2..6].fill(0); // total length, id
        h[10..12].fill(0); // checksum
        checksum::sum(0, &h[..n])
    };
    // TCP: 20 to 60 bytes; UDP: 8.
    let n = lay.end - lay.l4;
    h[..n].copy_from_slice(&packet[lay.l4..lay.end]);
    if lay.tcp {
        h[4..8].fill(0); // sequence number
        h[12..14].fill(0); // data offset and flags
        h[16..18].fill(0); // checksum
    } else {
        h[4..8].fill(0); // length, checksum
    }
    let proto = if lay.tcp { 6 } else { 17 };
    let pseudo = pseudo_sum(&packet[lay.l3..], lay.v6, proto, 0);
    // Folded to 16 bits, so that adding a segment's fields cannot overflow.
    Fixed {
        ip: u64::from(checksum::fold(ip)),
        l4: u64::from(checksum::fold(checksum::sum(pseudo, &h[..n]))),
    }
}

/// A TCP segment's identity, for deciding whether it continues a super-packet being built.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct TcpSeg {
    pub(crate) v6: bool,
    pub(crate) l4: usize,
    pub(crate) hdr_end: usize,
    pub(crate) seq: u32,
    pub(crate) payload: usize,
    pub(crate) flags: u8,
}

/// Recognises a plain IPv4/IPv6 TCP segment (no IP options or fragments, no IPv6 extension
/// headers) that may be coalesced; `None` for anything else.
pub(crate) fn tcp_segment(p: &[u8]) -> Option<TcpSeg> {
    let first = *p.first()?;
    let (l4, v6) = match first >> 4 {
        4 => {
            if first != 0x45 || p.len() < 40 || p[9] != 6 {
                return None;
            }
            // Not a fragment: MF clear and offset zero.
            if u16::from_be_bytes([p[6], p[7]]) & 0x3fff != 0 {
                return None;
            }
            if usize::from(u16::from_be_bytes([p[2], p[3]])) != p.len() {
                return None;
            }
            (20, false)
        }
        6 => {
            if p.len() < 60 || p[6] != 6 {
                return None;
            }
            if usize::from(u16::from_be_bytes([p[4], p[5]])) + 40 != p.len() {
                return None;
            }
            (40, true)
        }
        _ => return None,
    };
    let thl = usize::from(p[l4 + 12] >> 4) * 4;
    if thl < 20 || l4 + thl > p.len() {
        return None;
    }
    Some(TcpSeg {
        v6,
        l4,
        hdr_end: l4 + thl,
        seq: u32::from_be_bytes([p[l4 + 4], p[l4 + 5], p[l4 + 6], p[l4 + 7]]),
        payload: p.len() - l4 - thl,
        flags: p[l4 + 13],
    })
}

/// Whether the TCP checksum of segment `p` (as [`tcp_segment`] read it) is right. A segment
/// joins a super-packet only if so: the super-packet goes to the kernel with its checksum
/// left to fill ([`F_NEEDS_CSUM`]), which would make a damaged segment look sound to the
/// receiving host, where on its own its checksum gets it dropped.
pub(crate) fn tcp_checksum_ok(p: &[u8], seg: &TcpSeg) -> bool {
    let Some(l4) = p.get(seg.l4..) else {
        return false;
    };
    let pseudo = pseudo_sum(p, seg.v6, 6, l4.len());
    checksum::fold(checksum::sum(pseudo, l4)) == 0xffff
}

/// How many packets from the front of `packets` make one super-packet: 1 unless the first is
/// a TCP segment with payload and a right checksum, then as many as follow it in order
/// ([`tcp_can_merge`], each with a right checksum), up to `max_run` segments and
/// `max_super` bytes.
pub(crate) fn tcp_run<'a>(
    mut packets: impl Iterator<Item = &'a [u8]>,
    max_run: usize,
    max_super: usize,
) -> usize {
    let Some(a) = packets.next() else {
        return 1;
    };
    let Some(head) = tcp_segment(a) else {
        return 1;
    };
    if head.payload == 0 || !tcp_checksum_ok(a, &head) {
        return 1;
    }
    let mut last = head;
    let mut count = 1;
    let mut total = a.len();
    for b in packets {
        let Some(next) = tcp_segment(b) else {
            break;
        };
        if total + next.payload > max_super
            || count >= max_run
            || !tcp_can_merge(a, &head, count, &last, b, &next)
            || !tcp_checksum_ok(b, &next)
        {
            break;
        }
        total += next.payload;
        last = next;
        count += 1;
    }
    count
}

/// Whether segment `next` (bytes `b`) can follow `head` (bytes `a`, already `count` segments
/// of `head.payload` bytes each) in one super-packet: same flow and header bytes except the
/// ones that change per segment, sequence numbers contiguous, only ACK (and PSH on the last)
/// set, and a full-sized predecessor.
pub(crate) fn tcp_can_merge(
    a: &[u8],
    head: &TcpSeg,
    count: usize,
    last: &TcpSeg,
    b: &[u8],
    next: &TcpSeg,
) -> bool {
    if next.v6 != head.v6 || next.hdr_end != head.hdr_end || next.payload == 0 {
        return false;
    }
    if next.payload > head.payload || last.payload != head.payload {
        return false;
    }
    if last.flags & !0x10 != 0 || next.flags & !(0x10 | 0x08) != 0 {
        return false;
    }
    if next.seq != head.seq.wrapping_add((head.payload * count) as u32) {
        return false;
    }
    let l4 = head.l4;
    let same = |r: core::ops::Range<usize>| a.get(r.clone()) == b.get(r);
    let ip_same = if head.v6 {
        // version/class/flow label, next header, hop limit, addresses
        same(0..4) && same(6..40)
    } else {
        // TOS, flags/fragment, TTL, protocol, addresses
        same(0..2) && same(6..10) && same(12..20)
    };
    // ports, ack number, data offset, window, urgent pointer, options (timestamps)
    ip_same
        && same(l4..l4 + 4)
        && same(l4 + 8..l4 + 13)
        && same(l4 + 14..l4 + 16)
        && same(l4 + 18..head.hdr_end)
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::{PacketBuilder, SlicedPacket, TransportSlice};

    fn segment(
        hdr: &VnetHeader,
        p: &[u8],
        l3: usize,
        mut sink: impl FnMut(usize) -> Option<Vec<u8>>,
    ) -> Result<Vec<Vec<u8>>, VnetError> {
        let s = Segmenter::new(hdr, p, l3)?;
        let mut out = Vec::new();
        for i in 0..s.count() {
            let mut b = sink(s.segment_len(i)).ok_or(VnetError::NoBuffer { segment: i })?;
            s.write(i, &mut b)?;
            out.push(b);
        }
        Ok(out)
    }
    fn fresh(len: usize) -> Option<Vec<u8>> {
        Some(vec![0u8; len])
    }

    fn tcp_packet(payload_len: usize, v6: bool, seq: u32) -> Vec<u8> {
        let payload: Vec<u8> = (0..payload_len).map(|i| (i * 7 + 3) as u8).collect();
        let b = if v6 {
            PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
        } else {
            PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
        }
        .tcp(40000, 5201, seq, 65000)
        .ack(77)
        .psh();
        let mut out = Vec::new();
        b.write(&mut out, &payload).unwrap();
        out
    }

    /// Segments a super-packet and checks every segment with etherparse, an independent
    /// implementation, including its checksums.
    fn check_segmentation(v6: bool) {
        let big = tcp_packet(4000, v6, 1_000_000);
        let hdr = VnetHeader {
            flags: F_NEEDS_CSUM,
            gso_type: if v6 { GsoType::TcpV6 } else { GsoType::TcpV4 },
            gso_size: 1448,
            ..VnetHeader::default()
        };
        let bufs = segment(&hdr, &big, 0, fresh).unwrap();
        assert_eq!(bufs.len(), 3);
        let mut expected_seq = 1_000_000u32;
        let mut joined = Vec::new();
        for (i, seg) in bufs.iter().enumerate() {
            let sliced = SlicedPacket::from_ip(seg).unwrap();
            let Some(TransportSlice::Tcp(tcp)) = &sliced.transport else {
                panic!("not tcp")
            };
            assert_eq!(tcp.sequence_number(), expected_seq);
            assert_eq!(tcp.psh(), i == 2, "PSH only on the last");
            let ip = sliced.net.as_ref().unwrap();
            let pl = tcp.payload();
            let computed = if v6 {
                let etherparse::NetSlice::Ipv6(v) = ip else {
                    panic!()
                };
                tcp.to_header()
                    .calc_checksum_ipv6(&v.header().to_header(), pl)
                    .unwrap()
            } else {
                let etherparse::NetSlice::Ipv4(v) = ip else {
                    panic!()
                };
                let h = v.header().to_header();
                assert_eq!(h.header_checksum, h.calc_header_checksum());
                assert_eq!(h.identification, i as u16);
                tcp.to_header().calc_checksum_ipv4(&h, pl).unwrap()
            };
            assert_eq!(tcp.checksum(), computed);
            expected_seq += pl.len() as u32;
            joined.extend_from_slice(pl);
        }
        assert_eq!(bufs[2].len(), if v6 { 60 } else { 40 } + 4000 - 2 * 1448);
        let orig = SlicedPacket::from_ip(&big).unwrap();
        let Some(TransportSlice::Tcp(t)) = orig.transport else {
            panic!()
        };
        assert_eq!(joined, t.payload());
    }

    /// A super-packet as a TUN hands it over, built by etherparse with the fields given (the
    /// checksums left as garbage: with `F_NEEDS_CSUM` they are the segmenter's to fill).
    fn super_packet(
        v6: bool,
        addrs: [u8; 32],
        ip_id: u16,
        ip_opts: usize,
        tcp: Option<(u32, u8, usize)>,
        payload: &[u8],
    ) -> Vec<u8> {
        use etherparse::{IpNumber, Ipv4Header, Ipv4Options, Ipv6Header, TcpHeader, UdpHeader};
        let proto = if tcp.is_some() {
            IpNumber::TCP
        } else {
            IpNumber::UDP
        };
        let l4 = match tcp {
            Some((seq, flags, opts)) => {
                let mut t = TcpHeader::new(40000, 5201, seq, 64000);
                t.fin = flags & 0x01 != 0;
                t.psh = flags & 0x08 != 0;
                t.ack = flags & 0x10 != 0;
                t.acknowledgment_number = 77;
                t.urg = flags & 0x20 != 0;
                t.ece = flags & 0x40 != 0;
                t.cwr = flags & 0x80 != 0;
                t.set_options_raw(&vec![1u8; opts * 4]).unwrap(); // NOPs
                t.checksum = 0x1234;
                t.to_bytes().to_vec()
            }
            None => {
                let u = UdpHeader {
                    source_port: 1000,
                    destination_port: 2000,
                    length: (8 + payload.len()) as u16,
                    checksum: 0x4321,
                };
                u.to_bytes().to_vec()
            }
        };
        let mut out = if v6 {
            let h = Ipv6Header {
                traffic_class: 0,
                flow_label: Default::default(),
                payload_length: (l4.len() + payload.len()) as u16,
                next_header: proto,
                hop_limit: 64,
                source: addrs[..16].try_into().unwrap(),
                destination: addrs[16..].try_into().unwrap(),
            };
            h.to_bytes().to_vec()
        } else {
            let mut h = Ipv4Header::new(
                (l4.len() + payload.len()) as u16,
                64,
                proto,
                addrs[..4].try_into().unwrap(),
                addrs[4..8].try_into().unwrap(),
            )
            .unwrap();
            h.identification = ip_id;
            h.options = Ipv4Options::try_from(&vec![1u8; ip_opts * 4][..]).unwrap();
            h.set_payload_len(l4.len() + payload.len()).unwrap();
            h.header_checksum = 0xbeef;
            h.to_bytes().to_vec()
        };
        out.extend_from_slice(&l4);
        out.extend_from_slice(payload);
        out
    }

    proptest::proptest! {
        /// Any TSO or USO super-packet (IPv4 with options or IPv6; TCP with options and any
        /// flags, or UDP; any payload and segment size) becomes segments that etherparse
        /// reads as the original's headers with each segment's lengths, IPv4 id, sequence
        /// number and flags, valid checksums, and the payload in order.
        #[test]
        fn segments_are_what_etherparse_expects(
            v6 in proptest::bool::ANY,
            addrs in proptest::array::uniform32(proptest::num::u8::ANY),
            ip_id in proptest::num::u16::ANY,
            ip_opts in 0usize..=10,
            tcp in proptest::option::weighted(0.8, (proptest::num::u32::ANY, proptest::num::u8::ANY, 0usize..=10)),
            len in 1usize..5000,
            gso in 1u16..1600,
            seed in proptest::num::u8::ANY,
        ) {
            use etherparse::NetSlice;
            let payload: Vec<u8> = (0..len).map(|i| (i as u8).wrapping_mul(31) ^ seed).collect();
            let ip_opts = if v6 { 0 } else { ip_opts };
            let big = super_packet(v6, addrs, ip_id, ip_opts, tcp, &payload);
            let gso_type = match (tcp.is_some(), v6) {
                (true, false) => GsoType::TcpV4,
                (true, true) => GsoType::TcpV6,
                (false, _) => GsoType::UdpL4,
            };
            let hdr = VnetHeader { flags: F_NEEDS_CSUM, gso_type, gso_size: gso, ..VnetHeader::default() };
            let segs = segment(&hdr, &big, 0, fresh).unwrap();
            let n = len.div_ceil(usize::from(gso));
            proptest::prop_assert_eq!(segs.len(), n);
            let orig = SlicedPacket::from_ip(&big).unwrap();
            let mut joined = Vec::new();
            for (i, seg) in segs.iter().enumerate() {
                let s = SlicedPacket::from_ip(seg).unwrap();
                let body = match (&s.net, &orig.net) {
                    (Some(NetSlice::Ipv4(v)), Some(NetSlice::Ipv4(o))) => {
                        let (h, mut want) = (v.header().to_header(), o.header().to_header());
                        proptest::prop_assert_eq!(h.header_checksum, h.calc_header_checksum());
                        want.identification = ip_id.wrapping_add(i as u16);
                        want.total_len = seg.len() as u16;
                        want.header_checksum = h.header_checksum;
                        proptest::prop_assert_eq!(&h, &want);
                        let (t, o) = (s.transport.as_ref().unwrap(), orig.transport.as_ref().unwrap());
                        check_transport(t, o, (i, n, usize::from(gso)), Ip::V4(&h))?
                    }
                    (Some(NetSlice::Ipv6(v)), Some(NetSlice::Ipv6(o))) => {
                        let (h, mut want) = (v.header().to_header(), o.header().to_header());
                        want.payload_length = (seg.len() - 40) as u16;
                        proptest::prop_assert_eq!(&h, &want);
                        let (t, o) = (s.transport.as_ref().unwrap(), orig.transport.as_ref().unwrap());
                        check_transport(t, o, (i, n, usize::from(gso)), Ip::V6(&h))?
                    }
                    _ => panic!("not the original's IP version"),
                };
                joined.extend_from_slice(&body);
            }
            proptest::prop_assert_eq!(joined, payload);
        }
    }

    /// The IP header a transport checksum is computed against.
    enum Ip<'a> {
        V4(&'a etherparse::Ipv4Header),
        V6(&'a etherparse::Ipv6Header),
    }

    /// The segment's transport header against the original's: TCP with this segment's
    /// sequence number, FIN and PSH only on the last segment, CWR only on the first; UDP
    /// with its own length. Both with the checksum etherparse computes. Returns the payload.
    fn check_transport(
        t: &TransportSlice<'_>,
        o: &TransportSlice<'_>,
        (i, n, gso): (usize, usize, usize),
        ip: Ip<'_>,
    ) -> Result<Vec<u8>, proptest::test_runner::TestCaseError> {
        match (t, o) {
            (TransportSlice::Tcp(t), TransportSlice::Tcp(o)) => {
                let (h, mut want) = (t.to_header(), o.to_header());
                want.sequence_number = want.sequence_number.wrapping_add((i * gso) as u32);
                want.fin &= i + 1 == n;
                want.psh &= i + 1 == n;
                want.cwr &= i == 0;
                want.checksum = h.checksum;
                proptest::prop_assert_eq!(&h, &want);
                let c = match ip {
                    Ip::V4(ip) => h.calc_checksum_ipv4(ip, t.payload()),
                    Ip::V6(ip) => h.calc_checksum_ipv6(ip, t.payload()),
                };
                proptest::prop_assert_eq!(h.checksum, c.unwrap());
                Ok(t.payload().to_vec())
            }
            (TransportSlice::Udp(u), TransportSlice::Udp(_)) => {
                let h = u.to_header();
                proptest::prop_assert_eq!(usize::from(h.length), 8 + u.payload().len());
                let c = match ip {
                    Ip::V4(ip) => h.calc_checksum_ipv4(ip, u.payload()),
                    Ip::V6(ip) => h.calc_checksum_ipv6(ip, u.payload()),
                };
                proptest::prop_assert_eq!(h.checksum, c.unwrap());
                Ok(u.payload().to_vec())
            }
            _ => panic!("not the original's transport"),
        }
    }

    /// Segments `seq0..` of one flow, `len` payload bytes each, ACK set, built by etherparse.
    fn flow_segments(v6: bool, n: usize, len: usize) -> Vec<Vec<u8>> {
        (0..n)
            .map(|i| {
                let seq = 5000 + (i * len) as u32;
                let b = if v6 {
                    PacketBuilder::ipv6([0xfd; 16], [0xfe; 16], 64)
                } else {
                    PacketBuilder::ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
                }
                .tcp(40000, 5201, seq, 65000)
                .ack(9);
                let payload: Vec<u8> = (0..len).map(|k| (k + i) as u8).collect();
                let mut out = Vec::new();
                b.write(&mut out, &payload).unwrap();
                out
            })
            .collect()
    }

    /// Runs stop at a segment whose checksum is wrong, whether its payload or its checksum
    /// field was damaged; a damaged first segment goes alone.
    #[test]
    fn a_segment_with_a_wrong_checksum_is_not_coalesced() {
        for v6 in [false, true] {
            let run = |segs: &[Vec<u8>]| tcp_run(segs.iter().map(|s| &s[..]), 64, 65535);
            let segs = flow_segments(v6, 5, 1000);
            assert_eq!(run(&segs), 5, "v6 {v6}");
            assert_eq!(tcp_run(segs.iter().map(|s| &s[..]), 3, 65535), 3);
            let l4 = if v6 { 40 } else { 20 };
            // A payload byte of the third segment.
            let mut bad = segs.clone();
            *bad[2].last_mut().unwrap() ^= 0x40;
            assert_eq!(run(&bad), 2, "v6 {v6}: damaged payload");
            assert_eq!(run(&bad[2..]), 1, "v6 {v6}: damaged first segment");
            assert_eq!(run(&bad[3..]), 2, "v6 {v6}: the rest still runs");
            // The checksum field of the second.
            let mut bad = segs.clone();
            bad[1][l4 + 17] ^= 0x01;
            assert_eq!(run(&bad), 1, "v6 {v6}: damaged checksum field");
            let seg = tcp_segment(&segs[0]).unwrap();
            assert!(tcp_checksum_ok(&segs[0], &seg));
            assert!(!tcp_checksum_ok(&bad[1], &tcp_segment(&bad[1]).unwrap()));
        }
    }

    #[test]
    fn tso_v4_segments_verify_with_etherparse() {
        check_segmentation(false);
    }

    #[test]
    fn tso_v6_segments_verify_with_etherparse() {
        check_segmentation(true);
    }

    #[test]
    fn tap_frames_with_a_vlan_tag_are_segmented_behind_the_link_header() {
        let payload: Vec<u8> = (0..3000).map(|i| i as u8).collect();
        let mut frame = Vec::new();
        PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2])
            .single_vlan(etherparse::VlanId::try_new(7).unwrap())
            .ipv4([10, 0, 0, 1], [10, 0, 0, 2], 64)
            .tcp(1000, 2000, 42, 1000)
            .ack(1)
            .write(&mut frame, &payload)
            .unwrap();
        let l3 = l3_offset_ethernet(&frame).unwrap();
        assert_eq!(l3, 18);
        let hdr = VnetHeader {
            gso_type: GsoType::TcpV4,
            gso_size: 1400,
            ..VnetHeader::default()
        };
        let segs = segment(&hdr, &frame, l3, fresh).unwrap();
        assert_eq!(segs.len(), 3);
        let mut joined = Vec::new();
        for seg in &segs {
            let s = SlicedPacket::from_ethernet(seg).unwrap();
            assert_eq!(s.vlan_ids().first().map(|v| v.value()), Some(7));
            let Some(etherparse::NetSlice::Ipv4(v4)) = &s.net else {
                panic!()
            };
            let Some(TransportSlice::Tcp(t)) = &s.transport else {
                panic!()
            };
            let c = t
                .to_header()
                .calc_checksum_ipv4(&v4.header().to_header(), t.payload())
                .unwrap();
            assert_eq!(t.checksum(), c);
            joined.extend_from_slice(t.payload());
        }
        assert_eq!(joined, payload);
    }

    #[test]
    fn uso_segments_are_datagrams() {
        let payload = vec![0xabu8; 2500];
        let mut big = Vec::new();
        PacketBuilder::ipv4([192, 0, 2, 1], [192, 0, 2, 2], 64)
            .udp(1000, 2000)
            .write(&mut big, &payload)
            .unwrap();
        let hdr = VnetHeader {
            gso_type: GsoType::UdpL4,
            gso_size: 1000,
            ..VnetHeader::default()
        };
        let bufs = segment(&hdr, &big, 0, fresh).unwrap();
        assert_eq!(bufs.len(), 3);
        for (seg, want) in bufs.iter().zip([1000usize, 1000, 500]) {
            let s = SlicedPacket::from_ip(seg).unwrap();
            let Some(TransportSlice::Udp(u)) = &s.transport else {
                panic!()
            };
            assert_eq!(u.payload().len(), want);
            let etherparse::NetSlice::Ipv4(v) = s.net.as_ref().unwrap() else {
                panic!()
            };
            let c = u
                .to_header()
                .calc_checksum_ipv4(&v.header().to_header(), u.payload())
                .unwrap();
            assert_eq!(u.checksum(), c);
        }
    }

    #[test]
    fn partial_checksum_completed() {
        // A TCP packet whose checksum field holds only the pseudo-header sum, as the kernel
        // hands it over with NEEDS_CSUM.
        let mut p = tcp_packet(100, false, 5);
        let good = u16::from_be_bytes([p[36], p[37]]);
        let pseudo = checksum::fold(checksum::pseudo_v4([10, 0, 0, 1], [10, 0, 0, 2], 6, 120));
        p[36..38].copy_from_slice(&pseudo.to_be_bytes());
        let hdr = VnetHeader {
            flags: F_NEEDS_CSUM,
            csum_start: 20,
            csum_offset: 16,
            ..VnetHeader::default()
        };
        let out = segment(&hdr, &p, 0, fresh).unwrap();
        assert_eq!(out.len(), 1);
        assert_eq!(u16::from_be_bytes([out[0][36], out[0][37]]), good);
    }

    #[test]
    fn header_round_trip_and_bad_input() {
        let h = VnetHeader {
            flags: 1,
            gso_type: GsoType::TcpV4,
            ecn: true,
            hdr_len: 66,
            gso_size: 1448,
            csum_start: 20,
            csum_offset: 16,
        };
        let mut b = [0u8; 10];
        h.emit(&mut b);
        assert_eq!(VnetHeader::parse(&b), Ok(h));
        assert!(matches!(
            VnetHeader::parse(&b[..9]),
            Err(VnetError::Truncated { .. })
        ));
        b[1] = 9;
        assert!(VnetHeader::parse(&b).is_err());
        let bad = VnetHeader {
            gso_type: GsoType::TcpV4,
            gso_size: 0,
            ..VnetHeader::default()
        };
        assert!(segment(&bad, &tcp_packet(10, false, 0), 0, |_| None).is_err());
        let ok = VnetHeader {
            gso_type: GsoType::TcpV4,
            gso_size: 100,
            ..VnetHeader::default()
        };
        assert_eq!(
            segment(&ok, &tcp_packet(300, false, 0), 0, |_| None),
            Err(VnetError::NoBuffer { segment: 0 })
        );
        assert!(segment(&ok, &[0x45, 0, 0], 0, |_| None).is_err());
        assert!(l3_offset_ethernet(&[0; 13]).is_err());
        let mut eth = vec![0u8; 18];
        eth[12..14].copy_from_slice(&[0x81, 0x00]);
        eth[16..18].copy_from_slice(&[0x08, 0x00]);
        assert_eq!(l3_offset_ethernet(&eth), Ok(18));
    }
}
