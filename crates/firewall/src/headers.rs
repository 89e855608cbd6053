//! IPv4, IPv6, TCP, UDP, ICMP and ICMPv6 fields the engine reads and rewrites in place,
//! with checksums kept right by RFC 1624 incremental updates, and the ICMP errors and TCP
//! resets it builds for `reject`. IPv4 headers are validated with etherparse; IPv6 headers
//! are walked here (RFC 8200 §4: hop-by-hop, routing, fragment, destination options and
//! AH headers skipped up to the upper-layer header). Fields are then read at their fixed
//! offsets (RFC 791, 793, 768, 792, 4443), every access bounds-checked.

use gatekit_packet::DropReason;
use gatekit_packet::checksum::{fold, internet, pseudo_v4, pseudo_v6, sum, update16, update32};

use crate::conntrack::{Tuple, Tuple6};
use crate::ir::RejectWith;

pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;
pub(crate) const ICMP: u8 = 1;
pub(crate) const ICMPV6: u8 = 58;

/// The most IPv6 extension headers walked before the packet is called malformed.
const MAX_EXT_HEADERS: usize = 8;

/// What the engine knows about an IPv4 or IPv6 packet.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct PktInfo {
    /// An IPv6 packet: the addresses are in `src6`/`dst6`, `src`/`dst` are zero.
    pub v6: bool,
    /// The IP length (for IPv6, 40 + payload length).
    pub total: usize,
    pub src: u32,
    pub dst: u32,
    pub src6: u128,
    pub dst6: u128,
    /// IP protocol, or for IPv6 the upper-layer header.
    pub proto: u8,
    /// Offset of the transport header, when this is an unfragmented packet or a first
    /// fragment and the header is all there.
    pub l4: Option<usize>,
    pub sport: u16,
    pub dport: u16,
    pub has_ports: bool,
    pub tcp_flags: u8,
    /// Type and code of an ICMP packet of the packet's own family (ICMPv4 for IPv4,
    /// ICMPv6 for IPv6).
    pub icmp: Option<(u8, u8)>,
    pub icmp_id: u16,
    pub fragment: bool,
}

#[inline]
pub(crate) fn be16(d: &[u8], off: usize) -> Option<u16> {
    Some(u16::from_be_bytes([*d.get(off)?, *d.get(off + 1)?]))
}
#[inline]
pub(crate) fn be32(d: &[u8], off: usize) -> Option<u32> {
    Some(u32::from_be_bytes([
        *d.get(off)?,
        *d.get(off + 1)?,
        *d.get(off + 2)?,
        *d.get(off + 3)?,
    ]))
}

pub(crate) fn is_icmp_error(ty: u8) -> bool {
    matches!(ty, 3 | 4 | 5 | 11 | 12)
}

/// Whether an ICMPv6 type is an error message (RFC 4443 §2.1: types 0 to 127).
pub(crate) fn is_icmp6_error(ty: u8) -> bool {
    ty < 128
}

/// Parses the IPv4 or IPv6 packet at the start of `d` (which may be longer than it) into
/// `info`. The caller keeps `info` in place: returned by value, the struct was copied in
/// pieces whose widths did not match the stores that filled it, and each such load waited
/// for those stores to drain.
#[inline]
pub(crate) fn parse_ip_into(d: &[u8], info: &mut PktInfo) -> Result<(), DropReason> {
    match d.first().map(|b| b >> 4) {
        Some(6) => parse_ipv6(d, info),
        Some(_) => parse_ipv4(d, info),
        None => Err(DropReason::Truncated),
    }
}

/// Reads the transport fields of the upper-layer header at `l4` into `info`.
fn transport(info: &mut PktInfo, l4: &[u8], off: usize) -> Result<(), DropReason> {
    let icmp = if info.v6 { ICMPV6 } else { ICMP };
    match info.proto {
        TCP if l4.len() >= 20 => {
            info.sport = be16(l4, 0).unwrap_or(0);
            info.dport = be16(l4, 2).unwrap_or(0);
            info.tcp_flags = l4[13];
            info.has_ports = true;
            info.l4 = Some(off);
        }
        UDP | 33 | 132 | 136 if l4.len() >= 8 => {
            info.sport = be16(l4, 0).unwrap_or(0);
            info.dport = be16(l4, 2).unwrap_or(0);
            info.has_ports = true;
            info.l4 = Some(off);
        }
        p if p == icmp && l4.len() >= 8 => {
            info.icmp = Some((l4[0], l4[1]));
            let echo = if info.v6 {
                matches!(l4[0], 128 | 129)
            } else {
                matches!(l4[0], 0 | 8 | 13 | 14)
            };
            if echo {
                info.icmp_id = be16(l4, 4).unwrap_or(0);
            }
            info.l4 = Some(off);
        }
        TCP | UDP | 33 | 132 | 136 => return Err(DropReason::Truncated),
        p if p == icmp => return Err(DropReason::Truncated),
        _ => {}
    }
    Ok(())
}

/// Where the upper-layer header of the IPv6 packet `d[..end]` starts: its protocol, its
/// offset, and the fragment offset (in 8-byte units) if a fragment header was crossed.
/// `Err(Truncated)` when an extension header runs past `end`, `Err(Malformed)` after
/// [`MAX_EXT_HEADERS`] of them.
fn ipv6_upper(d: &[u8], end: usize) -> Result<(u8, usize, Option<u16>), DropReason> {
    let mut nh = *d.get(6).ok_or(DropReason::Truncated)?;
    let mut off = 40usize;
    let mut frag = None;
    for _ in 0..MAX_EXT_HEADERS {
        let len = match nh {
            // Hop-by-hop options, routing, destination options: (Hdr Ext Len + 1) * 8.
            0 | 43 | 60 => {
                (usize::from(
                    *d.get(off + 1)
                        .filter(|_| off + 2 <= end)
                        .ok_or(DropReason::Truncated)?,
                ) + 1)
                    * 8
            }
            // Fragment: 8 bytes; offset in the top 13 bits of bytes 2-3 (RFC 8200 §4.5).
            44 => {
                if off + 8 > end {
                    return Err(DropReason::Truncated);
                }
                frag = Some(be16(d, off + 2).ok_or(DropReason::Truncated)? >> 3);
                8
            }
            // Authentication header: (Payload Len + 2) * 4 (RFC 4302 §2.2).
            51 => {
                (usize::from(
                    *d.get(off + 1)
                        .filter(|_| off + 2 <= end)
                        .ok_or(DropReason::Truncated)?,
                ) + 2)
                    * 4
            }
            _ => return Ok((nh, off, frag)),
        };
        if off + len > end {
            return Err(DropReason::Truncated);
        }
        nh = d[off];
        off += len;
        if frag.is_some_and(|f| f != 0) {
            // A non-first fragment: what follows is not a header.
            return Ok((nh, off, frag));
        }
    }
    match nh {
        0 | 43 | 44 | 51 | 60 => Err(DropReason::Malformed),
        _ => Ok((nh, off, frag)),
    }
}

/// Parses the IPv6 packet at the start of `d` (which may be longer than the packet),
/// walking its extension headers to the upper-layer header.
fn parse_ipv6(d: &[u8], info: &mut PktInfo) -> Result<(), DropReason> {
    if d.len() < 40 {
        return Err(DropReason::Truncated);
    }
    if d[0] >> 4 != 6 {
        return Err(DropReason::Malformed);
    }
    let total = 40 + usize::from(be16(d, 4).unwrap_or(0));
    if total > d.len() {
        return Err(DropReason::Truncated);
    }
    let addr = |o: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(&d[o..o + 16]);
        u128::from_be_bytes(b)
    };
    let (proto, off, frag) = ipv6_upper(d, total)?;
    *info = PktInfo {
        v6: true,
        total,
        src6: addr(8),
        dst6: addr(24),
        proto,
        fragment: frag.is_some(),
        ..PktInfo::default()
    };
    if frag.is_some_and(|f| f != 0) {
        return Ok(());
    }
    transport(info, &d[off..total], off)
}

/// Parses the IPv4 packet at the start of `d` (which may be longer than the packet).
fn parse_ipv4(d: &[u8], info: &mut PktInfo) -> Result<(), DropReason> {
    let h = etherparse::Ipv4HeaderSlice::from_slice(d).map_err(|e| match e {
        etherparse::err::ipv4::HeaderSliceError::Len(_) => DropReason::Truncated,
        _ => DropReason::Malformed,
    })?;
    let ihl = usize::from(h.ihl()) * 4;
    let total = usize::from(h.total_len());
    if total < ihl {
        return Err(DropReason::Malformed);
    }
    if total > d.len() {
        return Err(DropReason::Truncated);
    }
    let frag_off = h.fragments_offset().value();
    *info = PktInfo {
        total,
        src: u32::from_be_bytes(h.source()),
        dst: u32::from_be_bytes(h.destination()),
        proto: h.protocol().0,
        fragment: frag_off != 0 || h.more_fragments(),
        ..PktInfo::default()
    };
    if frag_off != 0 {
        return Ok(());
    }
    transport(info, &d[ihl..total], ihl)
}

/// The conntrack tuple of a parsed packet. ICMP echo uses the identifier as both ports.
pub(crate) fn tuple_of(i: &PktInfo) -> Tuple {
    let (sport, dport) = if i.has_ports {
        (i.sport, i.dport)
    } else if i.icmp.is_some() {
        (i.icmp_id, i.icmp_id)
    } else {
        (0, 0)
    };
    Tuple {
        src: i.src,
        dst: i.dst,
        sport,
        dport,
        proto: i.proto,
    }
}

/// The conntrack tuple of a parsed IPv6 packet. ICMPv6 echo uses the identifier as both
/// ports.
pub(crate) fn tuple6_of(i: &PktInfo) -> Tuple6 {
    let t = tuple_of(i);
    Tuple6 {
        src: i.src6.into(),
        dst: i.dst6.into(),
        sport: t.sport,
        dport: t.dport,
        proto: i.proto,
    }
}

/// The tuple of the IPv6 packet quoted inside an ICMPv6 error (as the quoted packet
/// travelled). The quote may be cut short (RFC 4443 §2.4 (c)): the ports are read if the
/// first 4 bytes of the upper-layer header are there.
pub(crate) fn icmp6_inner(d: &[u8], outer: &PktInfo) -> Option<Tuple6> {
    let off = outer.l4? + 8;
    let inner = d.get(off..outer.total)?;
    if inner.len() < 40 || inner[0] >> 4 != 6 {
        return None;
    }
    let (proto, l4, frag) = ipv6_upper(inner, inner.len()).ok()?;
    let (sport, dport) = match proto {
        _ if frag.is_some_and(|f| f != 0) => (0, 0),
        TCP | UDP | 33 | 132 | 136 => (be16(inner, l4)?, be16(inner, l4 + 2)?),
        ICMPV6 => {
            let id = be16(inner, l4 + 4).unwrap_or(0);
            (id, id)
        }
        _ => (0, 0),
    };
    let addr = |o: usize| {
        let mut b = [0u8; 16];
        b.copy_from_slice(inner.get(o..o + 16)?);
        Some(core::net::Ipv6Addr::from(b))
    };
    Some(Tuple6 {
        src: addr(8)?,
        dst: addr(24)?,
        sport,
        dport,
        proto,
    })
}

/// The quoted packet inside an ICMP error: offset of its IP header in the outer packet and
/// its tuple (as the quoted packet travelled).
pub(crate) fn icmp_inner(d: &[u8], outer: &PktInfo) -> Option<(usize, Tuple)> {
    let off = outer.l4? + 8;
    let inner = d.get(off..outer.total)?;
    let ihl = usize::from(*inner.first()? & 0x0f) * 4;
    if *inner.first()? >> 4 != 4 || ihl < 20 || inner.len() < ihl + 4 {
        return None;
    }
    let proto = inner[9];
    let (sport, dport) = match proto {
        TCP | UDP | 33 | 132 | 136 => (be16(inner, ihl)?, be16(inner, ihl + 2)?),
        ICMP => {
            let id = be16(inner, ihl + 4).unwrap_or(0);
            (id, id)
        }
        _ => (0, 0),
    };
    Some((
        off,
        Tuple {
            src: be32(inner, 12)?,
            dst: be32(inner, 16)?,
            sport,
            dport,
            proto,
        },
    ))
}

/// Applies RFC 1624 eqn. 3 to the checksum field at `c` for a 16-bit word going from `old`
/// to `new`. With `zero_none` (UDP), a zero checksum means "none" and stays zero, and a
/// computed zero is sent as 0xFFFF (RFC 768).
fn adjust16(d: &mut [u8], c: usize, old: u16, new: u16, zero_none: bool) {
    if let Some(hc) = be16(d, c)
        && !(zero_none && hc == 0)
        && old != new
    {
        let v = update16(hc, old, new);
        let v = if zero_none && v == 0 { 0xffff } else { v };
        d[c..c + 2].copy_from_slice(&v.to_be_bytes());
    }
}

fn adjust32(d: &mut [u8], c: usize, old: u32, new: u32, zero_none: bool) {
    if let Some(hc) = be16(d, c)
        && !(zero_none && hc == 0)
        && old != new
    {
        let v = update32(hc, old, new);
        let v = if zero_none && v == 0 { 0xffff } else { v };
        d[c..c + 2].copy_from_slice(&v.to_be_bytes());
    }
}

/// Where the transport checksum of the packet at `ip` (transport header at `l4`) lives, and
/// whether zero means "no checksum". `None` when it is not in the bytes at hand.
fn l4_csum(d: &[u8], ip: usize, l4: usize) -> Option<(usize, bool)> {
    match *d.get(ip + 9)? {
        TCP if d.len() >= l4 + 18 => Some((l4 + 16, false)),
        UDP if d.len() >= l4 + 8 => Some((l4 + 6, true)),
        _ => None,
    }
}

/// Rewrites the source (`src: true`) or destination address, and port if given, of the IP
/// packet at offset `ip` of `d`, whose transport header (if present) is at `l4`.
/// `outer` is the checksum offset of an enclosing ICMP error for a quoted packet: the ICMP
/// checksum covers every quoted byte, inner checksums included, so it follows each change.
pub(crate) fn rewrite(
    d: &mut [u8],
    ip: usize,
    l4: Option<usize>,
    src: bool,
    addr: u32,
    port: Option<u16>,
    outer: Option<usize>,
) {
    let tcs = l4.and_then(|l4| l4_csum(d, ip, l4));
    let off = ip + if src { 12 } else { 16 };
    let Some(old) = be32(d, off) else { return };
    if old != addr {
        d[off..off + 4].copy_from_slice(&addr.to_be_bytes());
        let old_ipc = be16(d, ip + 10).unwrap_or(0);
        adjust32(d, ip + 10, old, addr, false);
        if let Some(o) = outer {
            adjust32(d, o, old, addr, false);
            adjust16(d, o, old_ipc, be16(d, ip + 10).unwrap_or(0), false);
        }
        // The transport checksum covers the addresses through the pseudo-header.
        if let Some((c, z)) = tcs {
            let old_t = be16(d, c).unwrap_or(0);
            adjust32(d, c, old, addr, z);
            if let Some(o) = outer {
                adjust16(d, o, old_t, be16(d, c).unwrap_or(0), false);
            }
        }
    }
    let has_ports = d
        .get(ip + 9)
        .is_some_and(|p| matches!(*p, TCP | UDP | 33 | 132 | 136));
    if let (Some(p), Some(l4), true) = (port, l4, has_ports) {
        let off = l4 + if src { 0 } else { 2 };
        let Some(old) = be16(d, off) else { return };
        if old == p {
            return;
        }
        d[off..off + 2].copy_from_slice(&p.to_be_bytes());
        if let Some(o) = outer {
            adjust16(d, o, old, p, false);
        }
        if let Some((c, z)) = tcs {
            let old_t = be16(d, c).unwrap_or(0);
            adjust16(d, c, old, p, z);
            if let Some(o) = outer {
                adjust16(d, o, old_t, be16(d, c).unwrap_or(0), false);
            }
        }
    }
}

/// Builds the answer `reject` sends for the packet `orig` into `out`; returns its length,
/// or `None` when no answer may be sent (RFC 1122 §3.2.2: never about an ICMP error, a
/// non-first fragment, or a broadcast or multicast packet; never a RST for a RST).
pub(crate) fn build_reject(
    orig: &[u8],
    i: &PktInfo,
    with: RejectWith,
    out: &mut [u8; 1280],
) -> Option<usize> {
    if i.v6 {
        return build_reject6(orig, i, with, out);
    }
    let bcast = |a: u32| a == u32::MAX || a >> 28 == 0xe || a == 0;
    if bcast(i.src) || bcast(i.dst) || i.fragment && i.l4.is_none() {
        return None;
    }
    if let Some((ty, _)) = i.icmp
        && is_icmp_error(ty)
    {
        return None;
    }
    let ip = |out: &mut [u8; 1280], len: usize, proto: u8| {
        out[0] = 0x45;
        out[1] = 0;
        out[2..4].copy_from_slice(&(len as u16).to_be_bytes());
        out[4..8].fill(0);
        out[8] = 64;
        out[9] = proto;
        out[10..12].fill(0);
        out[12..16].copy_from_slice(&i.dst.to_be_bytes());
        out[16..20].copy_from_slice(&i.src.to_be_bytes());
        let c = internet(&out[..20]);
        out[10..12].copy_from_slice(&c.to_be_bytes());
    };
    if with == RejectWith::TcpReset && i.proto == TCP {
        let len = 40;
        ip(out, len, TCP);
        reset(orig, i, &mut out[20..40])?;
        let acc = pseudo_v4(i.dst.to_be_bytes(), i.src.to_be_bytes(), TCP, 20);
        let c = !fold(sum(acc, &out[20..40]));
        out[36..38].copy_from_slice(&c.to_be_bytes());
        return Some(len);
    }
    let code = match with {
        RejectWith::NetUnreachable => 0,
        RejectWith::HostUnreachable => 1,
        RejectWith::ProtoUnreachable => 2,
        RejectWith::AdminProhibited => 13,
        RejectWith::PortUnreachable | RejectWith::TcpReset => 3,
    };
    // RFC 1812 §4.3.2.3: quote as much of the original as fits in 576 bytes.
    let quote = i.total.min(576 - 28);
    let len = 28 + quote;
    ip(out, len, ICMP);
    out[20] = 3;
    out[21] = code;
    out[22..28].fill(0);
    out[28..len].copy_from_slice(orig.get(..quote)?);
    let c = internet(&out[20..len]);
    out[22..24].copy_from_slice(&c.to_be_bytes());
    Some(len)
}

/// Writes into `tcp` (20 bytes) the RST that answers the TCP segment of `orig`, checksum
/// field zero; `None` if the segment is itself a RST or is not all there.
fn reset(orig: &[u8], i: &PktInfo, tcp: &mut [u8]) -> Option<()> {
    let l4 = i.l4?;
    let t = orig.get(l4..i.total)?;
    let flags = *t.get(13)?;
    if flags & 0x04 != 0 {
        return None;
    }
    // RFC 793 §3.4 (reset generation): with ACK, seq = SEG.ACK; without, seq = 0 and
    // ack = SEG.SEQ + SEG.LEN, SYN and FIN each counting one.
    let seg_seq = be32(t, 4)?;
    let seg_ack = be32(t, 8)?;
    let doff = usize::from(t[12] >> 4) * 4;
    let seg_len = t.len().saturating_sub(doff) as u32
        + u32::from(flags & 0x02 != 0)
        + u32::from(flags & 0x01 != 0);
    let (seq, ack, out_flags) = if flags & 0x10 != 0 {
        (seg_ack, 0, 0x04)
    } else {
        (0, seg_seq.wrapping_add(seg_len), 0x14)
    };
    tcp[0..2].copy_from_slice(&i.dport.to_be_bytes());
    tcp[2..4].copy_from_slice(&i.sport.to_be_bytes());
    tcp[4..8].copy_from_slice(&seq.to_be_bytes());
    tcp[8..12].copy_from_slice(&ack.to_be_bytes());
    tcp[12] = 5 << 4;
    tcp[13] = out_flags;
    tcp[14..20].fill(0);
    Some(())
}

/// The IPv6 answer of `reject`: a TCP RST, or an ICMPv6 destination unreachable quoting
/// as much of the packet as fits in the IPv6 minimum MTU (RFC 4443 §3.1, 1280 bytes).
/// None is sent (RFC 4443 §2.4 (e)) about an ICMPv6 error or redirect, a non-first
/// fragment, a packet to a multicast address, or from the unspecified or a multicast one.
fn build_reject6(
    orig: &[u8],
    i: &PktInfo,
    with: RejectWith,
    out: &mut [u8; 1280],
) -> Option<usize> {
    let multicast = |a: u128| a >> 120 == 0xff;
    if i.src6 == 0 || multicast(i.src6) || multicast(i.dst6) || i.fragment && i.l4.is_none() {
        return None;
    }
    if let Some((ty, _)) = i.icmp
        && (is_icmp6_error(ty) || ty == 137)
    {
        return None;
    }
    let (src, dst) = (i.dst6.to_be_bytes(), i.src6.to_be_bytes());
    let ip = |out: &mut [u8; 1280], plen: usize, nh: u8| {
        out[0..4].copy_from_slice(&[0x60, 0, 0, 0]);
        out[4..6].copy_from_slice(&(plen as u16).to_be_bytes());
        out[6] = nh;
        out[7] = 64;
        out[8..24].copy_from_slice(&src);
        out[24..40].copy_from_slice(&dst);
    };
    if with == RejectWith::TcpReset && i.proto == TCP {
        ip(out, 20, TCP);
        reset(orig, i, &mut out[40..60])?;
        let acc = pseudo_v6(src, dst, TCP, 20);
        let c = !fold(sum(acc, &out[40..60]));
        out[56..58].copy_from_slice(&c.to_be_bytes());
        return Some(60);
    }
    let code = match with {
        RejectWith::NetUnreachable => 0,
        RejectWith::AdminProhibited | RejectWith::ProtoUnreachable => 1,
        RejectWith::HostUnreachable => 3,
        RejectWith::PortUnreachable | RejectWith::TcpReset => 4,
    };
    let quote = i.total.min(1280 - 48);
    let plen = 8 + quote;
    ip(out, plen, ICMPV6);
    out[40] = 1;
    out[41] = code;
    out[42..48].fill(0);
    out[48..48 + quote].copy_from_slice(orig.get(..quote)?);
    let acc = pseudo_v6(src, dst, ICMPV6, plen as u32);
    let c = !fold(sum(acc, &out[40..48 + quote]));
    out[42..44].copy_from_slice(&c.to_be_bytes());
    Some(48 + quote)
}
