//! MAC addresses, the Ethernet/802.1Q header as the fabric reads it, and in-place tagging.

use gatekit_packet::{BufError, PacketBuf};

/// The 802.1Q Tag Protocol Identifier.
pub const TPID_8021Q: u16 = 0x8100;

/// A 48-bit IEEE MAC address.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct MacAddr(pub [u8; 6]);

impl MacAddr {
    /// ff:ff:ff:ff:ff:ff.
    pub const BROADCAST: MacAddr = MacAddr([0xff; 6]);

    /// Whether the group (I/G) bit is set: multicast, broadcast included.
    #[inline]
    pub const fn is_multicast(&self) -> bool {
        self.0[0] & 1 != 0
    }
    /// Whether this is the broadcast address.
    pub fn is_broadcast(&self) -> bool {
        *self == Self::BROADCAST
    }
    /// Whether this is 00:00:00:00:00:00.
    pub fn is_zero(&self) -> bool {
        self.0 == [0; 6]
    }
    /// The address as the low 48 bits of a u64.
    #[inline]
    pub const fn to_u64(self) -> u64 {
        let b = self.0;
        u64::from_be_bytes([0, 0, b[0], b[1], b[2], b[3], b[4], b[5]])
    }
    /// The address from the low 48 bits of a u64.
    #[inline]
    pub const fn from_u64(v: u64) -> Self {
        let b = v.to_be_bytes();
        MacAddr([b[2], b[3], b[4], b[5], b[6], b[7]])
    }
}

impl core::fmt::Display for MacAddr {
    fn fmt(&self, f: &mut core::fmt::Formatter<'_>) -> core::fmt::Result {
        let b = self.0;
        write!(
            f,
            "{:02x}:{:02x}:{:02x}:{:02x}:{:02x}:{:02x}",
            b[0], b[1], b[2], b[3], b[4], b[5]
        )
    }
}

/// The fields of an Ethernet header the fabric needs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct L2Header {
    /// Destination address.
    pub dst: MacAddr,
    /// Source address.
    pub src: MacAddr,
    /// The 802.1Q VLAN id, if the frame carries a tag (0 for a priority tag).
    pub tag: Option<u16>,
    /// The EtherType after the tag, if any.
    pub ethertype: u16,
    /// Offset of the payload after the EtherType.
    pub payload: usize,
}

impl L2Header {
    /// Reads the header of `frame`; `None` if it is shorter than its header.
    #[inline]
    pub fn parse(frame: &[u8]) -> Option<L2Header> {
        let h = frame.get(..14)?;
        let mut dst = [0u8; 6];
        let mut src = [0u8; 6];
        dst.copy_from_slice(&h[..6]);
        src.copy_from_slice(&h[6..12]);
        let et = u16::from_be_bytes([h[12], h[13]]);
        if et == TPID_8021Q {
            let t = frame.get(14..18)?;
            Some(L2Header {
                dst: MacAddr(dst),
                src: MacAddr(src),
                tag: Some(u16::from_be_bytes([t[0], t[1]]) & 0x0fff),
                ethertype: u16::from_be_bytes([t[2], t[3]]),
                payload: 18,
            })
        } else {
            Some(L2Header {
                dst: MacAddr(dst),
                src: MacAddr(src),
                tag: None,
                ethertype: et,
                payload: 14,
            })
        }
    }
}

/// Makes the 802.1Q tagging of the frame in `buf` what an egress port wants: adds a tag
/// with VLAN `want` (priority 0), rewrites the VLAN of an existing tag (keeping its priority
/// bits), or removes the tag when `want` is `None`. The MAC addresses move by 4 bytes, the
/// payload does not. Needs 4 bytes of headroom to add a tag.
pub fn retag<B: PacketBuf>(buf: &mut B, want: Option<u16>) -> Result<(), BufError> {
    let len = buf.len();
    let tagged = buf.data().get(12..14) == Some(&TPID_8021Q.to_be_bytes()[..]) && len >= 18;
    match (tagged, want) {
        (false, None) => Ok(()),
        (true, Some(vid)) => {
            let d = buf.data_mut();
            let tci = (u16::from_be_bytes([d[14], d[15]]) & 0xf000) | (vid & 0x0fff);
            d[14..16].copy_from_slice(&tci.to_be_bytes());
            Ok(())
        }
        (true, None) => {
            buf.data_mut().copy_within(0..12, 4);
            buf.pull_front(4)
        }
        (false, Some(vid)) => {
            if len < 12 {
                return Err(BufError::TooShort {
                    needed: 12,
                    available: len,
                });
            }
            buf.push_front(4)?;
            let d = buf.data_mut();
            d.copy_within(4..16, 0);
            d[12..14].copy_from_slice(&TPID_8021Q.to_be_bytes());
            d[14..16].copy_from_slice(&(vid & 0x0fff).to_be_bytes());
            Ok(())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use gatekit_packet::PktBuf;

    fn frame(tag: Option<u16>) -> Vec<u8> {
        let mut out = Vec::new();
        let b = etherparse::PacketBuilder::ethernet2([2, 0, 0, 0, 0, 1], [2, 0, 0, 0, 0, 2]);
        let b = match tag {
            Some(v) => b.single_vlan(etherparse::VlanId::try_new(v).unwrap()).ipv4(
                [1, 1, 1, 1],
                [2, 2, 2, 2],
                1,
            ),
            None => b.ipv4([1, 1, 1, 1], [2, 2, 2, 2], 1),
        };
        b.udp(1, 2).write(&mut out, b"x").unwrap();
        out
    }

    #[test]
    fn parse_and_retag_match_etherparse_frames() {
        let plain = frame(None);
        let tagged = frame(Some(100));
        let h = L2Header::parse(&tagged).unwrap();
        assert_eq!(h.tag, Some(100));
        assert_eq!(h.ethertype, 0x0800);
        assert_eq!(h.src, MacAddr([2, 0, 0, 0, 0, 1]));
        assert_eq!(L2Header::parse(&plain).unwrap().payload, 14);

        let mut b = PktBuf::from_slice(&plain, 4, 0);
        retag(&mut b, Some(100)).unwrap();
        assert_eq!(b.data(), &tagged[..]);
        retag(&mut b, Some(100)).unwrap();
        assert_eq!(b.data(), &tagged[..]);
        retag(&mut b, None).unwrap();
        assert_eq!(b.data(), &plain[..]);
        retag(&mut b, None).unwrap();
        assert_eq!(b.data(), &plain[..]);
        let mut nohead = PktBuf::from_slice(&plain, 0, 0);
        assert!(retag(&mut nohead, Some(5)).is_err());
        assert!(L2Header::parse(&tagged[..16]).is_none());
        assert_eq!(
            MacAddr::from_u64(MacAddr([1, 2, 3, 4, 5, 6]).to_u64()),
            MacAddr([1, 2, 3, 4, 5, 6])
        );
        assert_eq!(
            MacAddr([0xa, 0xb, 0xc, 0xd, 0xe, 0xf]).to_string(),
            "0a:0b:0c:0d:0e:0f"
        );
    }
}
