//! Cryptokey routing: which member owns an overlay destination (outbound), and whether an
//! inner source address belongs to the member whose key authenticated the packet (inbound).
//! WireGuard's rule: a peer may only send from, and is the only one sent to, its addresses.

use crate::{MemberId, Registry};
use core::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use gatekit_packet::{Action, DropCounters, DropReason};
use gatekit_route::IpLpm;
use ipnet::IpNet;

/// An immutable table from overlay prefixes to members, built from a [`Registry`] on the
/// control path and shared read-only by the data path (rebuild and swap it when the registry's
/// [`revision`](Registry::revision) moves).
#[derive(Debug, Clone, Default)]
pub struct CryptokeyTable {
    lpm: IpLpm<MemberId>,
    revision: u64,
}

impl CryptokeyTable {
    /// The table of the enabled members' addresses (disabled members are routed nowhere).
    pub fn build(reg: &Registry) -> CryptokeyTable {
        let mut lpm = IpLpm::new();
        for m in reg.members().filter(|m| m.enabled) {
            for a in &m.addresses {
                lpm.insert(IpNet::from(*a), m.id);
            }
        }
        CryptokeyTable {
            lpm,
            revision: reg.revision(),
        }
    }

    /// The registry revision the table was built from.
    pub fn revision(&self) -> u64 {
        self.revision
    }
    /// Number of prefixes.
    pub fn len(&self) -> usize {
        self.lpm.len()
    }
    /// True if no prefix is routed.
    pub fn is_empty(&self) -> bool {
        self.lpm.is_empty()
    }

    /// Outbound: the member that owns `dst`.
    #[inline]
    pub fn lookup(&self, dst: IpAddr) -> Option<MemberId> {
        self.lpm.lookup(dst).map(|(_, id)| *id)
    }

    /// Inbound: whether `src` belongs to `from`.
    #[inline]
    pub fn allows(&self, from: MemberId, src: IpAddr) -> bool {
        self.lookup(src) == Some(from)
    }

    /// Outbound for a whole IP packet: the member its destination belongs to, or the drop
    /// (`Malformed`/`Truncated` for bad headers, `NoRoute`), counted in `drops`.
    pub fn route(&self, packet: &[u8], drops: &mut DropCounters) -> Result<MemberId, Action> {
        let (_, dst) = addresses(packet).map_err(|r| drops.drop(r))?;
        self.lookup(dst)
            .ok_or_else(|| drops.drop(DropReason::NoRoute))
    }

    /// Inbound for a whole IP packet received from `from`: `Continue` if its source is one of
    /// `from`'s addresses, otherwise a counted drop (`SourceMismatch`, or `Malformed`/
    /// `Truncated` for bad headers).
    pub fn check_inbound(&self, from: MemberId, packet: &[u8], drops: &mut DropCounters) -> Action {
        match addresses(packet) {
            Ok((src, _)) if self.allows(from, src) => Action::Continue,
            Ok(_) => drops.drop(DropReason::SourceMismatch),
            Err(r) => drops.drop(r),
        }
    }
}

/// Source and destination of an IPv4 or IPv6 packet, with the lengths checked.
fn addresses(p: &[u8]) -> Result<(IpAddr, IpAddr), DropReason> {
    match p.first().map(|b| b >> 4) {
        Some(4) => {
            let h: &[u8; 20] = p
                .get(..20)
                .and_then(|s| s.try_into().ok())
                .ok_or(DropReason::Truncated)?;
            let src = Ipv4Addr::new(h[12], h[13], h[14], h[15]);
            let dst = Ipv4Addr::new(h[16], h[17], h[18], h[19]);
            Ok((src.into(), dst.into()))
        }
        Some(6) => {
            let h: &[u8; 40] = p
                .get(..40)
                .and_then(|s| s.try_into().ok())
                .ok_or(DropReason::Truncated)?;
            let mut s = [0u8; 16];
            let mut d = [0u8; 16];
            s.copy_from_slice(&h[8..24]);
            d.copy_from_slice(&h[24..40]);
            Ok((Ipv6Addr::from(s).into(), Ipv6Addr::from(d).into()))
        }
        Some(_) => Err(DropReason::Malformed),
        None => Err(DropReason::Truncated),
    }
}
