//! Configuration and API errors. Per-packet failures are not errors: they are
//! [`DropReason`](gatekit_packet::DropReason)s, counted.

use crate::{SaId, Suite, TunnelId};
use core::net::IpAddr;

/// Why an SA could not be made, added, replaced or removed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// The key material is not key ‖ 4-byte salt for the suite.
    #[error("{suite}: key material must be {expected} bytes (key and 4-byte salt), got {got}")]
    KeyLength {
        /// The suite.
        suite: Suite,
        /// Bytes expected.
        expected: usize,
        /// Bytes given.
        got: usize,
    },
    /// A character that is not a hex digit, or an odd number of digits.
    #[error("key hex: not a hex digit, or an odd digit count, at character {position}")]
    BadHex {
        /// Byte offset in the string.
        position: usize,
    },
    /// A suite name not known.
    #[error("unknown cipher suite {name:?} (known: aes128gcm16, aes256gcm16, chacha20poly1305)")]
    UnknownSuite {
        /// The name given.
        name: String,
    },
    /// SPIs 0..=255 are reserved (RFC 4303 §2.1).
    #[error("SPI {spi} is reserved: SPIs start at 256")]
    ReservedSpi {
        /// The SPI.
        spi: u32,
    },
    /// Another inbound SA already has this SPI.
    #[error("an inbound SA with SPI {spi:#010x} already exists")]
    DuplicateSpi {
        /// The SPI.
        spi: u32,
    },
    /// Another outbound SA is already bound to this tunnel (replace it with `rekey_outbound`).
    #[error("tunnel {} already has an outbound SA", tunnel.0)]
    DuplicateTunnel {
        /// The tunnel.
        tunnel: TunnelId,
    },
    /// Outer addresses of different families.
    #[error("SA {spi:#010x}: local {local} and peer {peer} are not the same address family")]
    AddressFamily {
        /// The SPI.
        spi: u32,
        /// Local address.
        local: IpAddr,
        /// Peer address.
        peer: IpAddr,
    },
    /// The original (NAT-OA) addresses are not of the SA's address family.
    #[error(
        "SA {spi:#010x}: original addresses {src} and {dst} are not of the SA's address family"
    )]
    NatOaFamily {
        /// The SPI.
        spi: u32,
        /// Original source address.
        src: IpAddr,
        /// Original destination address.
        dst: IpAddr,
    },
    /// The replay window size is out of range.
    #[error("replay window of {size} packets is out of range {min}..={max}")]
    ReplayWindow {
        /// The size given.
        size: u32,
        /// Smallest allowed.
        min: u32,
        /// Largest allowed.
        max: u32,
    },
    /// UDP encapsulation with port 0.
    #[error("SA {spi:#010x}: UDP encapsulation needs non-zero ports")]
    ZeroPort {
        /// The SPI.
        spi: u32,
    },
    /// The padding boundary is not a power of two from 4 to the maximum.
    #[error(
        "SA {spi:#010x}: padding boundary of {bytes} bytes must be a power of two from 4 to {max}"
    )]
    PadTo {
        /// The SPI.
        spi: u32,
        /// The boundary given.
        bytes: usize,
        /// The largest allowed.
        max: usize,
    },
    /// The SA does not exist (removed, or never added).
    #[error("no such SA: {0:?}")]
    UnknownSa(SaId),
    /// No inbound SA has this SPI.
    #[error("no inbound SA with SPI {spi:#010x}")]
    UnknownSpi {
        /// The SPI.
        spi: u32,
    },
    /// The operation needs an SA of the other direction.
    #[error("SA {spi:#010x} has the wrong direction for this operation")]
    WrongDirection {
        /// The SPI.
        spi: u32,
    },
}
