//! The VXLAN header (RFC 7348 §5).
//!
//! ```text
//!  0                   1                   2                   3
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |R|R|R|R|I|R|R|R|            Reserved                           |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                VXLAN Network Identifier (VNI) |   Reserved    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::WireError;

/// The IANA-assigned VXLAN UDP port (RFC 7348 §5).
pub const VXLAN_PORT: u16 = 4789;

const FLAG_I: u8 = 0x08;

/// A VXLAN header and the Ethernet frame after it, read (and written, under `AsMut`) in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct VxlanPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> VxlanPacket<T> {
    /// The header length.
    pub const LEN: usize = 8;

    /// Wraps `buffer` without checking it.
    pub const fn new_unchecked(buffer: T) -> Self {
        VxlanPacket { buffer }
    }
    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = VxlanPacket { buffer };
        p.check_len()?;
        Ok(p)
    }
    /// Checks that the buffer holds the 8-byte header.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < Self::LEN {
            return Err(WireError::Truncated {
                needed: Self::LEN,
                available: len,
            });
        }
        Ok(())
    }
    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }
    /// The flags byte.
    pub fn flags(&self) -> u8 {
        self.buffer.as_ref().first().copied().unwrap_or(0)
    }
    /// Whether the I flag (valid VNI) is set.
    pub fn vni_valid(&self) -> bool {
        self.flags() & FLAG_I != 0
    }
    /// The 24-bit VXLAN Network Identifier.
    pub fn vni(&self) -> u32 {
        match self.buffer.as_ref().get(4..7) {
            Some(v) => u32::from_be_bytes([0, v[0], v[1], v[2]]),
            None => 0,
        }
    }
    /// The inner Ethernet frame.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(Self::LEN..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> VxlanPacket<T> {
    /// Sets the flags byte.
    pub fn set_flags(&mut self, flags: u8) {
        if let Some(b) = self.buffer.as_mut().first_mut() {
            *b = flags;
        }
    }
    /// Sets the VNI (the low 24 bits of `vni`).
    pub fn set_vni(&mut self, vni: u32) {
        if let Some(v) = self.buffer.as_mut().get_mut(4..7) {
            v.copy_from_slice(&vni.to_be_bytes()[1..]);
        }
    }
    /// Zeroes the reserved fields (RFC 7348 §5: "MUST be set to zero on transmission").
    pub fn clear_reserved(&mut self) {
        let b = self.buffer.as_mut();
        for i in [1, 2, 3, 7] {
            if let Some(x) = b.get_mut(i) {
                *x = 0;
            }
        }
    }
}

/// A VXLAN header in high-level form: the VNI.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct VxlanRepr {
    /// The 24-bit VXLAN Network Identifier.
    pub vni: u32,
}

impl VxlanRepr {
    /// The largest VNI (24 bits).
    pub const MAX_VNI: u32 = 0x00ff_ffff;

    /// Parses a header: the I flag must be set (RFC 7348 §5: "The I flag MUST be set to 1 for
    /// a valid VXLAN Network ID"); reserved bits are ignored on receipt.
    pub fn parse<T: AsRef<[u8]>>(packet: &VxlanPacket<T>) -> Result<VxlanRepr, WireError> {
        packet.check_len()?;
        if !packet.vni_valid() {
            return Err(WireError::NoVni {
                flags: packet.flags(),
            });
        }
        Ok(VxlanRepr { vni: packet.vni() })
    }

    /// The header's length on the wire.
    pub const fn buffer_len(&self) -> usize {
        8
    }

    /// Writes the header at the start of `packet`.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut VxlanPacket<T>,
    ) -> Result<(), WireError> {
        packet.check_len()?;
        if self.vni > Self::MAX_VNI {
            return Err(WireError::VniTooLarge { vni: self.vni });
        }
        packet.set_flags(FLAG_I);
        packet.clear_reserved();
        packet.set_vni(self.vni);
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `VXLAN(vni=0x123456, flags=0x08)` as scapy 2.x emits it.
    const SCAPY: [u8; 8] = [0x08, 0x00, 0x00, 0x00, 0x12, 0x34, 0x56, 0x00];

    #[test]
    fn deconstruct_and_construct() {
        let p = VxlanPacket::new_checked(&SCAPY[..]).unwrap();
        assert!(p.vni_valid());
        assert_eq!(p.vni(), 0x123456);
        assert_eq!(VxlanRepr::parse(&p).unwrap(), VxlanRepr { vni: 0x123456 });
        let mut b = [0xffu8; 8];
        VxlanRepr { vni: 0x123456 }
            .emit(&mut VxlanPacket::new_unchecked(&mut b[..]))
            .unwrap();
        assert_eq!(b, SCAPY);
    }

    #[test]
    fn invalid() {
        assert!(VxlanPacket::new_checked(&SCAPY[..7]).is_err());
        let mut no_i = SCAPY;
        no_i[0] = 0;
        assert_eq!(
            VxlanRepr::parse(&VxlanPacket::new_unchecked(&no_i[..])),
            Err(WireError::NoVni { flags: 0 })
        );
        // Reserved bits set by the sender are ignored.
        let mut res = SCAPY;
        res[0] = 0xff;
        res[7] = 0xff;
        assert_eq!(
            VxlanRepr::parse(&VxlanPacket::new_unchecked(&res[..])),
            Ok(VxlanRepr { vni: 0x123456 })
        );
        let mut b = [0u8; 8];
        assert_eq!(
            VxlanRepr { vni: 1 << 24 }.emit(&mut VxlanPacket::new_unchecked(&mut b[..])),
            Err(WireError::VniTooLarge { vni: 1 << 24 })
        );
    }

    proptest! {
        #[test]
        fn round_trip(vni in 0u32..=VxlanRepr::MAX_VNI, junk in any::<[u8; 8]>()) {
            let mut b = junk;
            VxlanRepr { vni }.emit(&mut VxlanPacket::new_unchecked(&mut b[..])).unwrap();
            prop_assert_eq!(VxlanRepr::parse(&VxlanPacket::new_checked(&b[..]).unwrap()), Ok(VxlanRepr { vni }));
        }
    }
}
