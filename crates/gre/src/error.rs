//! Errors: header parsing, and tunnel configuration.

use core::net::IpAddr;
use gatekit_packet::DropReason;

/// Why a GRE or VXLAN header did not parse or could not be written.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum WireError {
    /// The buffer ends before the header does.
    #[error("header truncated: needed {needed} bytes, {available} available")]
    Truncated {
        /// Bytes the header needs.
        needed: usize,
        /// Bytes there were.
        available: usize,
    },
    /// GRE version other than 0 (RFC 2784 §2.3.1).
    #[error("unsupported GRE version {version}")]
    Version {
        /// The version field.
        version: u8,
    },
    /// GRE flags of RFC 1701 (routing, strict source route, recursion) that RFC 2784 §2.3 says
    /// to discard.
    #[error("unsupported GRE flags {flags:#06x}")]
    UnsupportedFlags {
        /// The first 16 bits of the header.
        flags: u16,
    },
    /// The GRE checksum did not verify.
    #[error("GRE checksum does not verify")]
    BadChecksum,
    /// VXLAN header without the I flag (RFC 7348 §5).
    #[error("VXLAN header without a valid VNI (flags {flags:#04x})")]
    NoVni {
        /// The flags byte.
        flags: u8,
    },
    /// A VNI wider than 24 bits.
    #[error("VNI {vni} does not fit in 24 bits")]
    VniTooLarge {
        /// The VNI asked for.
        vni: u32,
    },
}

impl WireError {
    /// The drop reason a data path counts for this error.
    pub fn drop_reason(&self) -> DropReason {
        match self {
            WireError::Truncated { .. } => DropReason::Truncated,
            WireError::BadChecksum => DropReason::BadChecksum,
            WireError::Version { .. } | WireError::UnsupportedFlags { .. } => {
                DropReason::Unsupported
            }
            WireError::NoVni { .. } | WireError::VniTooLarge { .. } => DropReason::Malformed,
        }
    }
}

/// Why a tunnel could not be added or configured.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum ConfigError {
    /// Local and remote addresses are of different families.
    #[error("tunnel endpoints {local} and {remote} are of different address families")]
    MixedFamilies {
        /// Local address.
        local: IpAddr,
        /// Remote address.
        remote: IpAddr,
    },
    /// A tunnel with the same identity exists already.
    #[error("a tunnel {local} -> {remote} with key {key:?} exists already")]
    Duplicate {
        /// Local address.
        local: IpAddr,
        /// Remote address.
        remote: IpAddr,
        /// GRE key or VXLAN VNI.
        key: Option<u32>,
    },
    /// An MTU too small for the inner protocol, or too large for the outer one.
    #[error("tunnel MTU {mtu} out of range {min}..={max}")]
    Mtu {
        /// MTU asked for.
        mtu: usize,
        /// Smallest allowed.
        min: usize,
        /// Largest allowed.
        max: usize,
    },
    /// A VNI wider than 24 bits.
    #[error("VNI {vni} does not fit in 24 bits")]
    Vni {
        /// The VNI asked for.
        vni: u32,
    },
    /// Keepalives need an IPv4 or IPv6 L3 payload path the peer can route back; they are not
    /// defined for keyless Ethernet-only use here, and need a non-zero interval.
    #[error("invalid keepalive: {why}")]
    Keepalive {
        /// What is wrong.
        why: &'static str,
    },
    /// No tunnel with this id.
    #[error("no tunnel with id {id}")]
    NoSuchTunnel {
        /// The id asked for.
        id: u32,
    },
}
