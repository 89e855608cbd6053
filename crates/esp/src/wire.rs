//! Wire formats: the ESP header (RFC 4303 §2) and the demultiplexing of UDP port 4500
//! (RFC 3948 §2).
//!
//! Two levels, as everywhere in gatekit: [`EspPacket`] is a checked zero-copy view over bytes,
//! [`EspRepr`] the parsed header that can be emitted again.

use core::fmt;

/// Field offsets of the ESP header.
mod field {
    use core::ops::Range;
    pub const SPI: Range<usize> = 0..4;
    pub const SEQ: Range<usize> = 4..8;
    pub const PAYLOAD: usize = 8;
}

/// Length of the ESP header: SPI and sequence number.
pub const ESP_HEADER_LEN: usize = field::PAYLOAD;

/// The IP protocol number of ESP.
pub const IPPROTO_ESP: u8 = 50;

/// The UDP port of IKE and ESP over UDP (RFC 3948 §2).
pub const NAT_T_PORT: u16 = 4500;

/// Why a view could not be made over some bytes.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// Fewer bytes than the header needs.
    #[error("ESP header truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes needed.
        needed: usize,
        /// Bytes there were.
        available: usize,
    },
    /// SPI 0 is reserved for local use and never appears on the wire (RFC 4303 §2.1).
    #[error("SPI 0 is reserved")]
    ZeroSpi,
}

/// A read/write view of an ESP packet (header, then the opaque protected payload).
#[derive(Clone, Copy, PartialEq, Eq)]
pub struct EspPacket<T: AsRef<[u8]>> {
    buffer: T,
}

impl<T: AsRef<[u8]>> fmt::Debug for EspPacket<T> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("EspPacket")
            .field("spi", &format_args!("{:#010x}", self.spi()))
            .field("seq", &self.seq())
            .field("payload_len", &self.payload().len())
            .finish()
    }
}

impl<T: AsRef<[u8]>> EspPacket<T> {
    /// A view without checks; the getters still never panic, they read zero on short input.
    pub const fn new_unchecked(buffer: T) -> Self {
        EspPacket { buffer }
    }

    /// A view after [`check_len`](Self::check_len).
    pub fn new_checked(buffer: T) -> Result<Self, WireError> {
        let p = EspPacket { buffer };
        p.check_len()?;
        Ok(p)
    }

    /// Checks that the buffer holds at least the ESP header.
    pub fn check_len(&self) -> Result<(), WireError> {
        let len = self.buffer.as_ref().len();
        if len < ESP_HEADER_LEN {
            return Err(WireError::Truncated {
                needed: ESP_HEADER_LEN,
                available: len,
            });
        }
        Ok(())
    }

    /// The bytes under the view.
    pub fn into_inner(self) -> T {
        self.buffer
    }

    fn be32(&self, r: core::ops::Range<usize>) -> u32 {
        match self.buffer.as_ref().get(r) {
            Some(&[a, b, c, d]) => u32::from_be_bytes([a, b, c, d]),
            _ => 0,
        }
    }

    /// The Security Parameters Index.
    pub fn spi(&self) -> u32 {
        self.be32(field::SPI)
    }

    /// The sequence number (its low 32 bits when the SA uses extended sequence numbers).
    pub fn seq(&self) -> u32 {
        self.be32(field::SEQ)
    }

    /// Everything after the header: IV, ciphertext, padding, trailer and ICV.
    pub fn payload(&self) -> &[u8] {
        self.buffer.as_ref().get(field::PAYLOAD..).unwrap_or(&[])
    }
}

impl<T: AsRef<[u8]> + AsMut<[u8]>> EspPacket<T> {
    /// Sets the SPI (no effect on a short buffer).
    pub fn set_spi(&mut self, spi: u32) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::SPI) {
            b.copy_from_slice(&spi.to_be_bytes());
        }
    }
    /// Sets the sequence number (no effect on a short buffer).
    pub fn set_seq(&mut self, seq: u32) {
        if let Some(b) = self.buffer.as_mut().get_mut(field::SEQ) {
            b.copy_from_slice(&seq.to_be_bytes());
        }
    }
    /// Everything after the header, writable.
    pub fn payload_mut(&mut self) -> &mut [u8] {
        self.buffer
            .as_mut()
            .get_mut(field::PAYLOAD..)
            .unwrap_or(&mut [])
    }
}

/// The ESP header, parsed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct EspRepr {
    /// Security Parameters Index.
    pub spi: u32,
    /// Sequence number (low 32 bits).
    pub seq: u32,
}

impl EspRepr {
    /// Reads the header from a checked view; SPI 0 is refused.
    pub fn parse<T: AsRef<[u8]>>(packet: &EspPacket<T>) -> Result<EspRepr, WireError> {
        packet.check_len()?;
        if packet.spi() == 0 {
            return Err(WireError::ZeroSpi);
        }
        Ok(EspRepr {
            spi: packet.spi(),
            seq: packet.seq(),
        })
    }
    /// Bytes the header takes.
    pub const fn buffer_len(&self) -> usize {
        ESP_HEADER_LEN
    }
    /// Writes the header into the view.
    pub fn emit<T: AsRef<[u8]> + AsMut<[u8]>>(&self, packet: &mut EspPacket<T>) {
        packet.set_spi(self.spi);
        packet.set_seq(self.seq);
    }
}

/// What a datagram received on a NAT-T port carries (RFC 3948 §2.2, §2.3).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum UdpPayloadKind {
    /// An ESP packet: the first four bytes (the SPI) are not zero.
    Esp,
    /// An IKE message behind the four-byte non-ESP marker (zeros); the IKE header starts at
    /// [`NON_ESP_MARKER_LEN`].
    Ike,
    /// The one-byte NAT keepalive, 0xFF.
    Keepalive,
    /// None of these: shorter than the ESP header, or an empty datagram.
    Malformed,
}

/// Length of the non-ESP marker in front of IKE on port 4500.
pub const NON_ESP_MARKER_LEN: usize = 4;

/// The one-byte NAT-keepalive payload (RFC 3948 §2.3).
pub const NAT_KEEPALIVE: [u8; 1] = [0xff];

/// Classifies the payload of a UDP datagram received on a NAT-T port.
///
/// RFC 3948 §2.2: a payload whose first four bytes are zero is the non-ESP marker (IKE);
/// otherwise the first four bytes are an SPI. §2.3: a one-byte payload of 0xFF is a keepalive.
/// An ESP packet needs at least its 8-byte header; anything shorter (other than the
/// keepalive) is malformed.
pub fn classify_udp_payload(payload: &[u8]) -> UdpPayloadKind {
    match payload {
        [0xff] => UdpPayloadKind::Keepalive,
        [0, 0, 0, 0, ..] => UdpPayloadKind::Ike,
        p if p.len() >= ESP_HEADER_LEN => UdpPayloadKind::Esp,
        _ => UdpPayloadKind::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    // RFC 3948 §2.1 figure: UDP header, then SPI 0x0000_1234 and sequence number 1.
    static PACKET: [u8; 12] = [
        0x00, 0x00, 0x12, 0x34, 0x00, 0x00, 0x00, 0x01, 0xaa, 0xbb, 0xcc, 0xdd,
    ];

    #[test]
    fn deconstruct() {
        let p = EspPacket::new_checked(&PACKET[..]).unwrap();
        assert_eq!(p.spi(), 0x1234);
        assert_eq!(p.seq(), 1);
        assert_eq!(p.payload(), &[0xaa, 0xbb, 0xcc, 0xdd]);
        assert_eq!(
            EspRepr::parse(&p).unwrap(),
            EspRepr {
                spi: 0x1234,
                seq: 1
            }
        );
    }

    #[test]
    fn construct_and_emit() {
        let mut bytes = [0u8; 12];
        bytes[8..].copy_from_slice(&[0xaa, 0xbb, 0xcc, 0xdd]);
        let mut p = EspPacket::new_unchecked(&mut bytes[..]);
        let repr = EspRepr {
            spi: 0x1234,
            seq: 1,
        };
        assert_eq!(repr.buffer_len(), 8);
        repr.emit(&mut p);
        assert_eq!(p.into_inner(), &PACKET[..]);
    }

    #[test]
    fn check_len_and_zero_spi() {
        assert_eq!(
            EspPacket::new_checked(&PACKET[..7]).unwrap_err(),
            WireError::Truncated {
                needed: 8,
                available: 7
            }
        );
        let short = EspPacket::new_unchecked(&PACKET[..3]);
        assert_eq!((short.spi(), short.seq(), short.payload()), (0, 0, &[][..]));
        let zero = [0u8; 8];
        assert_eq!(
            EspRepr::parse(&EspPacket::new_unchecked(&zero[..])),
            Err(WireError::ZeroSpi)
        );
    }

    #[test]
    fn demux_rfc3948() {
        assert_eq!(classify_udp_payload(&[0xff]), UdpPayloadKind::Keepalive);
        assert_eq!(classify_udp_payload(&[0, 0, 0, 0]), UdpPayloadKind::Ike);
        assert_eq!(
            classify_udp_payload(&[0, 0, 0, 0, 1, 2, 3]),
            UdpPayloadKind::Ike
        );
        assert_eq!(classify_udp_payload(&PACKET), UdpPayloadKind::Esp);
        assert_eq!(classify_udp_payload(&[]), UdpPayloadKind::Malformed);
        assert_eq!(classify_udp_payload(&[0xfe]), UdpPayloadKind::Malformed);
        assert_eq!(
            classify_udp_payload(&PACKET[..7]),
            UdpPayloadKind::Malformed
        );
    }
}
