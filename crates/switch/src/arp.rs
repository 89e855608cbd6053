//! ARP (RFC 826) for Ethernet and IPv4, read and answered in place for ARP suppression.

use crate::MacAddr;
use core::net::Ipv4Addr;

/// The ARP EtherType.
pub const ETHERTYPE_ARP: u16 = 0x0806;

/// An ARP packet for Ethernet/IPv4 (hardware type 1, protocol 0x0800, lengths 6 and 4).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Arp {
    /// 1 request, 2 reply.
    pub op: u16,
    /// Sender hardware address.
    pub sha: MacAddr,
    /// Sender protocol address.
    pub spa: Ipv4Addr,
    /// Target hardware address.
    pub tha: MacAddr,
    /// Target protocol address.
    pub tpa: Ipv4Addr,
}

impl Arp {
    /// Parses the ARP payload (after the EtherType); `None` unless Ethernet/IPv4.
    pub fn parse(p: &[u8]) -> Option<Arp> {
        let p = p.get(..28)?;
        if p[0..2] != [0, 1] || p[2..4] != [8, 0] || p[4] != 6 || p[5] != 4 {
            return None;
        }
        let mac = |o: usize| MacAddr([p[o], p[o + 1], p[o + 2], p[o + 3], p[o + 4], p[o + 5]]);
        let ip = |o: usize| Ipv4Addr::new(p[o], p[o + 1], p[o + 2], p[o + 3]);
        Some(Arp {
            op: u16::from_be_bytes([p[6], p[7]]),
            sha: mac(8),
            spa: ip(14),
            tha: mac(18),
            tpa: ip(24),
        })
    }
}

/// Rewrites the ARP request in `frame` (payload at `payload`) into the reply that `answer`
/// owns its target address, sent back to the requester: Ethernet addresses swapped, op 2,
/// sender and target exchanged (RFC 826, "Packet Reception").
pub(crate) fn reply_in_place(frame: &mut [u8], payload: usize, req: &Arp, answer: MacAddr) -> bool {
    let Some(p) = frame.get_mut(payload..payload + 28) else {
        return false;
    };
    p[6..8].copy_from_slice(&2u16.to_be_bytes());
    p[8..14].copy_from_slice(&answer.0);
    p[14..18].copy_from_slice(&req.tpa.octets());
    p[18..24].copy_from_slice(&req.sha.0);
    p[24..28].copy_from_slice(&req.spa.octets());
    frame[0..6].copy_from_slice(&req.sha.0);
    frame[6..12].copy_from_slice(&answer.0);
    true
}
