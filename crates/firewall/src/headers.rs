//! IPv4, TCP, UDP and ICMP fields the engine reads and rewrites in place, with checksums
//! kept right by RFC 1624 incremental updates, and the ICMP errors and TCP resets it builds
//! for `reject`. Headers are validated with etherparse; fields are then read at their fixed
//! offsets (RFC 791, 793, 768, 792), every access bounds-checked.

use gatekit_packet::DropReason;
use gatekit_packet::checksum::{fold, internet, pseudo_v4, sum, update16, update32};

use crate::conntrack::Tuple;
use crate::ir::RejectWith;

pub(crate) const TCP: u8 = 6;
pub(crate) const UDP: u8 = 17;
pub(crate) const ICMP: u8 = 1;

/// What the engine knows about an IPv4 packet.
#[derive(Debug, Clone, Copy, Default)]
pub(crate) struct Ipv4Info {
    pub total: usize,
    pub src: u32,
    pub dst: u32,
    pub proto: u8,
    /// Offset of the transport header, when this is an unfragmented packet or a first
    /// fragment and the header is all there.
    pub l4: Option<usize>,
    pub sport: u16,
    pub dport: u16,
    pub has_ports: bool,
    pub tcp_flags: u8,
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

/// Parses the IPv4 packet at the start of `d` (which may be longer than the packet).
pub(crate) fn parse_ipv4(d: &[u8]) -> Result<Ipv4Info, DropReason> {
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
    let mut info = Ipv4Info {
        total,
        src: u32::from_be_bytes(h.source()),
        dst: u32::from_be_bytes(h.destination()),
        proto: h.protocol().0,
        fragment: frag_off != 0 || h.more_fragments(),
        ..Ipv4Info::default()
    };
    if frag_off != 0 {
        return Ok(info);
    }
    let l4 = &d[ihl..total];
    match info.proto {
        TCP if l4.len() >= 20 => {
            info.sport = be16(l4, 0).unwrap_or(0);
            info.dport = be16(l4, 2).unwrap_or(0);
            info.tcp_flags = l4[13];
            info.has_ports = true;
            info.l4 = Some(ihl);
        }
        UDP | 33 | 132 | 136 if l4.len() >= 8 => {
            info.sport = be16(l4, 0).unwrap_or(0);
            info.dport = be16(l4, 2).unwrap_or(0);
            info.has_ports = true;
            info.l4 = Some(ihl);
        }
        ICMP if l4.len() >= 8 => {
            info.icmp = Some((l4[0], l4[1]));
            if matches!(l4[0], 0 | 8 | 13 | 14) {
                info.icmp_id = be16(l4, 4).unwrap_or(0);
            }
            info.l4 = Some(ihl);
        }
        TCP | UDP | 33 | 132 | 136 | ICMP => return Err(DropReason::Truncated),
        _ => {}
    }
    Ok(info)
}

/// The conntrack tuple of a parsed packet. ICMP echo uses the identifier as both ports.
pub(crate) fn tuple_of(i: &Ipv4Info) -> Tuple {
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

/// The quoted packet inside an ICMP error: offset of its IP header in the outer packet and
/// its tuple (as the quoted packet travelled).
pub(crate) fn icmp_inner(d: &[u8], outer: &Ipv4Info) -> Option<(usize, Tuple)> {
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
    i: &Ipv4Info,
    with: RejectWith,
    out: &mut [u8; 576],
) -> Option<usize> {
    let bcast = |a: u32| a == u32::MAX || a >> 28 == 0xe || a == 0;
    if bcast(i.src) || bcast(i.dst) || i.fragment && i.l4.is_none() {
        return None;
    }
    if let Some((ty, _)) = i.icmp
        && is_icmp_error(ty)
    {
        return None;
    }
    let ip = |out: &mut [u8; 576], len: usize, proto: u8| {
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
        let l4 = i.l4?;
        let t = orig.get(l4..i.total)?;
        let flags = t[13];
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
        let len = 40;
        ip(out, len, TCP);
        let tcp = &mut out[20..40];
        tcp[0..2].copy_from_slice(&i.dport.to_be_bytes());
        tcp[2..4].copy_from_slice(&i.sport.to_be_bytes());
        tcp[4..8].copy_from_slice(&seq.to_be_bytes());
        tcp[8..12].copy_from_slice(&ack.to_be_bytes());
        tcp[12] = 5 << 4;
        tcp[13] = out_flags;
        tcp[14..20].fill(0);
        let acc = pseudo_v4(i.dst.to_be_bytes(), i.src.to_be_bytes(), TCP, 20);
        let c = !fold(sum(acc, tcp));
        tcp[16..18].copy_from_slice(&c.to_be_bytes());
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
