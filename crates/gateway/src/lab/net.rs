//! The lab's internet: a router between the gateways' underlay links, with a NAT in front of
//! one site, carrying whole IP packets.

use etherparse::{IpNumber, Ipv4HeaderSlice};
use gatekit_packet::checksum;
use std::collections::{BTreeMap, VecDeque};
use std::net::Ipv4Addr;

/// A source NAT with port preservation where possible (like most home and cloud NATs):
/// outbound UDP from the private side gets the public address; replies to a mapped
/// public port go back to the private endpoint. Anything else from outside is dropped.
#[derive(Debug)]
pub struct Nat {
    /// The private side's prefix address (one host is enough for the lab).
    pub private: Ipv4Addr,
    /// The public address.
    pub public: Ipv4Addr,
    /// public port → private port
    map: BTreeMap<u16, u16>,
    /// Packets translated outbound.
    pub out_translated: u64,
    /// Packets translated inbound.
    pub in_translated: u64,
    /// Inbound packets with no mapping, dropped.
    pub in_dropped: u64,
}

impl Nat {
    /// A NAT hiding `private` behind `public`.
    pub fn new(private: Ipv4Addr, public: Ipv4Addr) -> Self {
        Nat {
            private,
            public,
            map: BTreeMap::new(),
            out_translated: 0,
            in_translated: 0,
            in_dropped: 0,
        }
    }

    /// Mappings in place, as (public port, private port).
    pub fn mappings(&self) -> impl Iterator<Item = (u16, u16)> + '_ {
        self.map.iter().map(|(a, b)| (*a, *b))
    }

    /// Translates a packet leaving the private side. Returns false to drop it (only UDP
    /// and ICMP cross this NAT; native ESP and GRE do not, which is why NAT-T exists).
    pub fn outbound(&mut self, pkt: &mut [u8]) -> bool {
        let Some((ihl, proto)) = ipv4(pkt) else {
            return false;
        };
        if proto != IpNumber::UDP.0 || pkt.len() < ihl + 8 {
            return false;
        }
        let sport = u16::from_be_bytes([pkt[ihl], pkt[ihl + 1]]);
        let public_port = match self.map.iter().find(|(_, p)| **p == sport) {
            Some((pp, _)) => *pp,
            None => {
                let mut pp = sport;
                while self.map.contains_key(&pp) {
                    pp = pp.wrapping_add(1).max(1024);
                }
                self.map.insert(pp, sport);
                pp
            }
        };
        rewrite(pkt, ihl, 12, self.public, Some((0, public_port)));
        self.out_translated += 1;
        true
    }

    /// Translates a packet arriving from outside to the public address.
    pub fn inbound(&mut self, pkt: &mut [u8]) -> bool {
        let Some((ihl, proto)) = ipv4(pkt) else {
            return false;
        };
        if proto != IpNumber::UDP.0 || pkt.len() < ihl + 8 {
            self.in_dropped += 1;
            return false;
        }
        let dport = u16::from_be_bytes([pkt[ihl + 2], pkt[ihl + 3]]);
        let Some(&private_port) = self.map.get(&dport) else {
            self.in_dropped += 1;
            return false;
        };
        rewrite(pkt, ihl, 16, self.private, Some((2, private_port)));
        self.in_translated += 1;
        true
    }
}

fn ipv4(pkt: &[u8]) -> Option<(usize, u8)> {
    let h = Ipv4HeaderSlice::from_slice(pkt).ok()?;
    Some((h.slice().len(), h.protocol().0))
}

/// Rewrites the IPv4 address at `addr_off` and optionally a UDP port, fixing the IP and UDP
/// checksums incrementally (RFC 1624). A zero UDP checksum (RFC 3948 §3.1 senders) stays zero.
fn rewrite(
    pkt: &mut [u8],
    ihl: usize,
    addr_off: usize,
    addr: Ipv4Addr,
    port: Option<(usize, u16)>,
) {
    let old = u32::from_be_bytes([
        pkt[addr_off],
        pkt[addr_off + 1],
        pkt[addr_off + 2],
        pkt[addr_off + 3],
    ]);
    let new = u32::from(addr);
    pkt[addr_off..addr_off + 4].copy_from_slice(&addr.octets());
    let ipc = u16::from_be_bytes([pkt[10], pkt[11]]);
    pkt[10..12].copy_from_slice(&checksum::update32(ipc, old, new).to_be_bytes());
    let uc_off = ihl + 6;
    let mut uc = u16::from_be_bytes([pkt[uc_off], pkt[uc_off + 1]]);
    if uc != 0 {
        uc = checksum::update32(uc, old, new);
    }
    if let Some((off, p)) = port {
        let o = ihl + off;
        let oldp = u16::from_be_bytes([pkt[o], pkt[o + 1]]);
        pkt[o..o + 2].copy_from_slice(&p.to_be_bytes());
        if uc != 0 {
            uc = checksum::update16(uc, oldp, p);
        }
    }
    if uc != 0 {
        pkt[uc_off..uc_off + 2].copy_from_slice(&uc.to_be_bytes());
    }
}

/// An underlay link end: packets the gateway sent, and packets waiting for it.
#[derive(Debug, Default)]
pub struct Link {
    /// Sent by the gateway, to be routed.
    pub up: VecDeque<Vec<u8>>,
    /// Routed to the gateway, to be received.
    pub down: VecDeque<Vec<u8>>,
}

/// The internet of the lab: site A's gateway is on a public address, site B's sits behind
/// a [`Nat`]. Routing is by destination address.
#[derive(Debug)]
pub struct Internet {
    /// Site A's public address.
    pub a_addr: Ipv4Addr,
    /// Site A's gateway link.
    pub a: Link,
    /// Site B's gateway link (private side of the NAT).
    pub b: Link,
    /// The NAT in front of site B.
    pub nat: Nat,
    /// Packets that went nowhere.
    pub unroutable: u64,
}

impl Internet {
    /// Site A at `a_addr`; site B at `b_private` behind a NAT with address `b_public`.
    pub fn new(a_addr: Ipv4Addr, b_private: Ipv4Addr, b_public: Ipv4Addr) -> Self {
        Internet {
            a_addr,
            a: Link::default(),
            b: Link::default(),
            nat: Nat::new(b_private, b_public),
            unroutable: 0,
        }
    }

    /// Moves every queued packet one hop; `tap` sees each packet as it crosses the public
    /// internet (after NAT on the way out of site B, before NAT on the way in).
    pub fn step(&mut self, mut tap: impl FnMut(&[u8])) {
        while let Some(mut p) = self.b.up.pop_front() {
            if self.nat.outbound(&mut p) && dst(&p) == Some(self.a_addr) {
                tap(&p);
                self.a.down.push_back(p);
            } else {
                self.unroutable += 1;
            }
        }
        while let Some(mut p) = self.a.up.pop_front() {
            if dst(&p) == Some(self.nat.public) {
                tap(&p);
                if self.nat.inbound(&mut p) {
                    self.b.down.push_back(p);
                }
            } else {
                self.unroutable += 1;
            }
        }
    }
}

fn dst(p: &[u8]) -> Option<Ipv4Addr> {
    Ipv4HeaderSlice::from_slice(p)
        .ok()
        .map(|h| h.destination_addr())
}

#[cfg(test)]
mod tests {
    use super::*;
    use etherparse::PacketBuilder;

    fn udp(src: [u8; 4], sp: u16, dst: [u8; 4], dp: u16) -> Vec<u8> {
        let mut v = Vec::new();
        PacketBuilder::ipv4(src, dst, 64)
            .udp(sp, dp)
            .write(&mut v, b"payload")
            .unwrap();
        v
    }

    /// NAT rewrites verify with etherparse's own checksum computation.
    #[test]
    fn nat_translates_and_checksums_stay_valid() {
        let mut net = Internet::new(
            [198, 51, 100, 1].into(),
            [192, 168, 0, 2].into(),
            [203, 0, 113, 2].into(),
        );
        net.b
            .up
            .push_back(udp([192, 168, 0, 2], 4500, [198, 51, 100, 1], 4500));
        let mut seen = Vec::new();
        net.step(|p| seen.push(p.to_vec()));
        let p = net.a.down.pop_front().unwrap();
        let s = etherparse::SlicedPacket::from_ip(&p).unwrap();
        let Some(etherparse::NetSlice::Ipv4(ip)) = &s.net else {
            panic!()
        };
        assert_eq!(ip.header().source(), [203, 0, 113, 2]);
        let ip_hdr = ip.header().to_header();
        assert_eq!(ip_hdr.calc_header_checksum(), ip_hdr.header_checksum);
        let Some(etherparse::TransportSlice::Udp(u)) = &s.transport else {
            panic!()
        };
        assert_eq!(u.source_port(), 4500, "port preserved");
        let want = u
            .to_header()
            .calc_checksum_ipv4(&ip_hdr, u.payload())
            .unwrap();
        assert_eq!(u.checksum(), want);
        assert_eq!(seen.len(), 1);

        // The reply finds its way back through the mapping; unsolicited traffic does not.
        net.a
            .up
            .push_back(udp([198, 51, 100, 1], 4500, [203, 0, 113, 2], 4500));
        net.a
            .up
            .push_back(udp([198, 51, 100, 1], 4500, [203, 0, 113, 2], 5000));
        net.step(|_| {});
        let back = net.b.down.pop_front().unwrap();
        let h = Ipv4HeaderSlice::from_slice(&back).unwrap();
        assert_eq!(h.destination(), [192, 168, 0, 2]);
        assert!(net.b.down.is_empty());
        assert_eq!(net.nat.in_dropped, 1);
        assert_eq!(net.nat.mappings().collect::<Vec<_>>(), vec![(4500, 4500)]);
    }
}
