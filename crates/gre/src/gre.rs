//! The GRE header (RFC 2784) with the key and sequence number extensions (RFC 2890).
//!
//! ```text
//!  0                   1                   2                   3
//!  0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1 2 3 4 5 6 7 8 9 0 1
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |C| |K|S| Reserved0       | Ver |         Protocol Type         |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |      Checksum (optional)      |       Reserved1 (Optional)    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                         Key (optional)                        |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! |                 Sequence Number (Optional)                    |
//! +-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+-+
//! ```

use crate::WireError;
use gatekit_packet::checksum;

/// Protocol Type values (EtherTypes) carried in GRE (RFC 2784 §2.4).
pub mod protocol {
    /// IPv4.
    pub const IPV4: u16 = 0x0800;
    /// IPv6.
    pub const IPV6: u16 = 0x86dd;
    /// Transparent Ethernet Bridging: the payload is an Ethernet frame.
    pub const TEB: u16 = 0x6558;
    /// A GRE keepalive reply: the de facto (Cisco) keepalive carries protocol 0 and no payload.
    pub const KEEPALIVE: u16 = 0x0000;
}

const FLAG_C: u16 = 0x8000;
const FLAG_K: u16 = 0x2000;
const FLAG_S: u16 = 0x1000;
/// Bits 1, 4 and 5 (routing present, strict source route, recursion): RFC 2784 §2.3 says a
/// receiver that does not implement RFC 1701 MUST discard a packet with any of them set (bits 2
/// and 3 are RFC 2890's K and S).
const FLAGS_RFC1701: u16 = 0x4000 | 0x0800 | 0x0400;
const VERSION_MASK: u16 = 0x0007;

/// A GRE header and its payload, read (and, under `AsMut`, written) in place.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GrePacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> GrePacket<T> {
    /// The smallest GRE header.
    pub const MIN_LEN: usize = 4;
    /// The largest GRE header this crate handles (checksum, key and sequence number).
    pub const MAX_LEN: usize = 16;

    /// Wraps `buffer` without checking it; accessors may then return short values. Use
    /// [`new_checked`](Self::new_checked) on untrusted bytes.
    pub const fn new_unchecked(buffer: T) -> Self {
        GrePacket { buffer }
    }

    /// Wraps `buffer` after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = GrePacket { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds the whole header its flags announce.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < Self::MIN_LEN {
            return Err(WireError::Truncated {
                needed: Self::MIN_LEN,
                available: len,
            });
        }
        let need = self.header_len();
        if len < need {
            return Err(WireError::Truncated {
                needed: need,
                available: len,
            });
        }
        Ok(())
    }

    /// The wrapped buffer.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn word16(&self, at: usize) -> u16 {
        let b = self.buffer.as_ref();
        match b.get(at..at + 2) {
            Some(w) => u16::from_be_bytes([w[0], w[1]]),
            None => 0,
        }
    }

    fn word32(&self, at: usize) -> u32 {
        let b = self.buffer.as_ref();
        match b.get(at..at + 4) {
            Some(w) => u32::from_be_bytes([w[0], w[1], w[2], w[3]]),
            None => 0,
        }
    }

    /// The first 16 bits: flags, reserved bits and version.
    pub fn flags(&self) -> u16 {
        self.word16(0)
    }
    /// The version field (0 for GRE; 1 is PPTP's enhanced GRE).
    pub fn version(&self) -> u8 {
        (self.flags() & VERSION_MASK) as u8
    }
    /// Whether the C bit (checksum present) is set.
    pub fn checksum_present(&self) -> bool {
        self.flags() & FLAG_C != 0
    }
    /// Whether the K bit (key present) is set.
    pub fn key_present(&self) -> bool {
        self.flags() & FLAG_K != 0
    }
    /// Whether the S bit (sequence number present) is set.
    pub fn seq_present(&self) -> bool {
        self.flags() & FLAG_S != 0
    }
    /// The Protocol Type (an EtherType, see [`protocol`]).
    pub fn protocol(&self) -> u16 {
        self.word16(2)
    }
    /// The length of the header the flags announce: 4, plus 4 for each of C, K and S.
    pub fn header_len(&self) -> usize {
        4 + 4
            * (usize::from(self.checksum_present())
                + usize::from(self.key_present())
                + usize::from(self.seq_present()))
    }
    fn key_offset(&self) -> usize {
        4 + 4 * usize::from(self.checksum_present())
    }
    fn seq_offset(&self) -> usize {
        self.key_offset() + 4 * usize::from(self.key_present())
    }
    /// The checksum field, if present.
    pub fn checksum(&self) -> Option<u16> {
        self.checksum_present().then(|| self.word16(4))
    }
    /// The key, if present (RFC 2890 §2.1).
    pub fn key(&self) -> Option<u32> {
        self.key_present().then(|| self.word32(self.key_offset()))
    }
    /// The sequence number, if present (RFC 2890 §2.2).
    pub fn seq(&self) -> Option<u32> {
        self.seq_present().then(|| self.word32(self.seq_offset()))
    }
    /// The payload after the header (empty if the buffer is shorter than the header).
    pub fn payload(&self) -> &[u8] {
        let b = self.buffer.as_ref();
        b.get(self.header_len()..).unwrap_or(&[])
    }
    /// Whether the checksum verifies over the header and payload (RFC 2784 §2.5: the one's
    /// complement checksum of the GRE header and payload). True when there is no checksum.
    pub fn verify_checksum(&self) -> bool {
        !self.checksum_present() || checksum::internet(self.buffer.as_ref()) == 0
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> GrePacket<T> {
    fn set_word16(&mut self, at: usize, v: u16) {
        if let Some(w) = self.buffer.as_mut().get_mut(at..at + 2) {
            w.copy_from_slice(&v.to_be_bytes());
        }
    }
    fn set_word32(&mut self, at: usize, v: u32) {
        if let Some(w) = self.buffer.as_mut().get_mut(at..at + 4) {
            w.copy_from_slice(&v.to_be_bytes());
        }
    }
    /// Sets the first 16 bits (flags, reserved, version). Set the flags before the optional
    /// fields: they decide where those fields are.
    pub fn set_flags(&mut self, flags: u16) {
        self.set_word16(0, flags);
    }
    /// Sets the Protocol Type.
    pub fn set_protocol(&mut self, protocol: u16) {
        self.set_word16(2, protocol);
    }
    /// Sets the key (does nothing if the K bit is clear).
    pub fn set_key(&mut self, key: u32) {
        if self.key_present() {
            let at = self.key_offset();
            self.set_word32(at, key);
        }
    }
    /// Sets the sequence number (does nothing if the S bit is clear).
    pub fn set_seq(&mut self, seq: u32) {
        if self.seq_present() {
            let at = self.seq_offset();
            self.set_word32(at, seq);
        }
    }
    /// Computes and writes the checksum over header and payload, Reserved1 zeroed (does
    /// nothing if the C bit is clear).
    pub fn fill_checksum(&mut self) {
        if self.checksum_present() {
            self.set_word32(4, 0);
            let c = checksum::internet(self.buffer.as_ref());
            self.set_word16(4, c);
        }
    }
    /// The payload, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        let at = self.header_len();
        self.buffer.as_mut().get_mut(at..).unwrap_or(&mut [])
    }
}

/// A GRE header in high-level form.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct GreRepr {
    /// Protocol Type of the payload (see [`protocol`]).
    pub protocol: u16,
    /// Whether a checksum is present (it is computed at emit and verified at parse).
    pub checksum: bool,
    /// The key, if any.
    pub key: Option<u32>,
    /// The sequence number, if any.
    pub seq: Option<u32>,
}

impl GreRepr {
    /// Parses and validates a header: version 0, no RFC 1701 routing bits, a checksum that
    /// verifies when present.
    pub fn parse<T: AsRef<[u8]>>(packet: &GrePacket<T>) -> Result<GreRepr, WireError> {
        packet.check_len()?;
        let flags = packet.flags();
        if packet.version() != 0 {
            return Err(WireError::Version {
                version: packet.version(),
            });
        }
        if flags & FLAGS_RFC1701 != 0 {
            return Err(WireError::UnsupportedFlags { flags });
        }
        if !packet.verify_checksum() {
            return Err(WireError::BadChecksum);
        }
        Ok(GreRepr {
            protocol: packet.protocol(),
            checksum: packet.checksum_present(),
            key: packet.key(),
            seq: packet.seq(),
        })
    }

    /// The header's length on the wire.
    pub const fn buffer_len(&self) -> usize {
        4 + 4 * (self.checksum as usize + self.key.is_some() as usize + self.seq.is_some() as usize)
    }

    /// The first 16 bits this header emits.
    pub const fn flags(&self) -> u16 {
        (if self.checksum { FLAG_C } else { 0 })
            | (if self.key.is_some() { FLAG_K } else { 0 })
            | (if self.seq.is_some() { FLAG_S } else { 0 })
    }

    /// Writes the header at the start of `packet`; the payload must already follow it when
    /// the checksum is on, since the checksum covers it. Fails if the buffer is too short.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(
        &self,
        packet: &mut GrePacket<T>,
    ) -> Result<(), WireError> {
        let len = packet.buffer.as_ref().len();
        if len < self.buffer_len() {
            return Err(WireError::Truncated {
                needed: self.buffer_len(),
                available: len,
            });
        }
        packet.set_flags(self.flags());
        packet.set_protocol(self.protocol);
        if let Some(k) = self.key {
            packet.set_key(k);
        }
        if let Some(s) = self.seq {
            packet.set_seq(s);
        }
        packet.fill_checksum();
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// A GRE header with C, K and S set, as scapy 2.x builds it for
    /// `GRE(chksum_present=1, key_present=1, seqnum_present=1, key=0x2a, sequence_number=7,
    /// proto=0x6558)/b"abcd"` (bytes captured from scapy).
    const SCAPY_CKS: [u8; 20] = [
        0xb0, 0x00, 0x65, 0x58, 0x25, 0xaf, 0x00, 0x00, 0x00, 0x00, 0x00, 0x2a, 0x00, 0x00, 0x00,
        0x07, b'a', b'b', b'c', b'd',
    ];

    #[test]
    fn deconstruct_scapy_header() {
        let p = GrePacket::new_checked(&SCAPY_CKS[..]).unwrap();
        assert!(p.checksum_present() && p.key_present() && p.seq_present());
        assert_eq!(p.header_len(), 16);
        assert_eq!(p.protocol(), protocol::TEB);
        assert_eq!(p.key(), Some(42));
        assert_eq!(p.seq(), Some(7));
        assert_eq!(p.payload(), b"abcd");
        assert!(p.verify_checksum());
        let r = GreRepr::parse(&p).unwrap();
        assert_eq!(
            r,
            GreRepr {
                protocol: protocol::TEB,
                checksum: true,
                key: Some(42),
                seq: Some(7)
            }
        );
    }

    #[test]
    fn construct_matches_scapy() {
        let mut buf = [0u8; 20];
        buf[16..].copy_from_slice(b"abcd");
        let r = GreRepr {
            protocol: protocol::TEB,
            checksum: true,
            key: Some(42),
            seq: Some(7),
        };
        r.emit(&mut GrePacket::new_unchecked(&mut buf[..])).unwrap();
        assert_eq!(buf, SCAPY_CKS);
    }

    /// RFC 2784 §2.1: the minimal header is 4 bytes, flags all clear.
    #[test]
    fn minimal_header() {
        let bytes = [0x00, 0x00, 0x08, 0x00, 0x45];
        let p = GrePacket::new_checked(&bytes[..]).unwrap();
        assert_eq!(p.header_len(), 4);
        assert_eq!(p.checksum(), None);
        assert_eq!(p.key(), None);
        assert_eq!(p.seq(), None);
        assert_eq!(GreRepr::parse(&p).unwrap().protocol, protocol::IPV4);
    }

    #[test]
    fn check_len_and_bad_fields() {
        assert_eq!(
            GrePacket::new_checked(&[0u8; 3][..]),
            Err(WireError::Truncated {
                needed: 4,
                available: 3
            })
        );
        // K and S announce 12 bytes.
        assert_eq!(
            GrePacket::new_checked(&[0x30, 0, 0x65, 0x58, 0, 0, 0, 1][..]),
            Err(WireError::Truncated {
                needed: 12,
                available: 8
            })
        );
        let v1 = [0x00, 0x01, 0x88, 0x0b];
        assert_eq!(
            GreRepr::parse(&GrePacket::new_unchecked(&v1[..])),
            Err(WireError::Version { version: 1 })
        );
        let routing = [0x40, 0x00, 0x08, 0x00];
        assert_eq!(
            GreRepr::parse(&GrePacket::new_unchecked(&routing[..])),
            Err(WireError::UnsupportedFlags { flags: 0x4000 })
        );
        let mut bad = SCAPY_CKS;
        bad[19] ^= 1;
        assert_eq!(
            GreRepr::parse(&GrePacket::new_unchecked(&bad[..])),
            Err(WireError::BadChecksum)
        );
        // Reserved0 bits 6-12 are ignored on receipt (RFC 2784 §2.3).
        let reserved = [0x00, 0xf8, 0x08, 0x00];
        assert!(GreRepr::parse(&GrePacket::new_unchecked(&reserved[..])).is_ok());
    }

    #[test]
    fn emit_into_short_buffer_fails() {
        let r = GreRepr {
            protocol: 1,
            checksum: false,
            key: Some(1),
            seq: None,
        };
        let mut b = [0u8; 7];
        assert_eq!(
            r.emit(&mut GrePacket::new_unchecked(&mut b[..])),
            Err(WireError::Truncated {
                needed: 8,
                available: 7
            })
        );
    }

    proptest! {
        #[test]
        fn repr_round_trip(
            protocol in any::<u16>(),
            checksum in any::<bool>(),
            key in any::<Option<u32>>(),
            seq in any::<Option<u32>>(),
            payload in proptest::collection::vec(any::<u8>(), 0..64),
        ) {
            let r = GreRepr { protocol, checksum, key, seq };
            let mut buf = vec![0u8; r.buffer_len() + payload.len()];
            buf[r.buffer_len()..].copy_from_slice(&payload);
            r.emit(&mut GrePacket::new_unchecked(&mut buf[..])).unwrap();
            let p = GrePacket::new_checked(&buf[..]).unwrap();
            prop_assert_eq!(GreRepr::parse(&p).unwrap(), r);
            prop_assert_eq!(p.payload(), &payload[..]);
        }

        #[test]
        fn parse_never_panics(bytes in proptest::collection::vec(any::<u8>(), 0..40)) {
            let p = GrePacket::new_unchecked(&bytes[..]);
            let _ = GreRepr::parse(&p);
            let _ = (p.key(), p.seq(), p.checksum(), p.payload().len());
        }
    }
}
