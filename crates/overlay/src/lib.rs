//! The overlay network's address plan, as a library a controller embeds.
//!
//! The overlay is a network of its own on top of the clouds' networks: its own address space,
//! members identified by x25519 keys, segments that may or may not reach each other. This crate
//! is that address plan:
//!
//! - [`AddressPlan`]: the overlay prefixes (IPv4 and IPv6), checked not to overlap the underlay
//!   and site subnets; segments as a CIDR tree inside them; reserved addresses.
//! - [`Registry`]: members ([`Member`]: key, name, tags, segment, addresses, enabled, endpoint,
//!   times), deterministic allocation of the next free or a fixed address, release with a
//!   quarantine before reuse, and conflicts reported as errors naming both sides.
//! - [`Policy`]: segment associations and per-tag rules, compiled by
//!   [`Registry::compile_policy`] into `gatekit-firewall` rules (its IR), so the overlay's
//!   access control runs on the same engine as everything else.
//! - [`CryptokeyTable`]: overlay prefix → member on `gatekit-route`'s longest-prefix match;
//!   outbound "who owns this destination", inbound "is this source the sender's".
//! - Persistence: [`Registry::save`] / [`Registry::load`] to a TOML file, atomically, with a
//!   format version and a checksum.
//! - [`ClientPack`]: a member's wg-quick configuration for stock WireGuard clients.
//!
//! It does not move packets: the encrypted transport, handshakes and timers live elsewhere.
//! It never reads the clock: calls that change state take `now`.
#![forbid(unsafe_code)]
#![warn(missing_docs)]

mod compile;
mod cryptokey;
mod key;
mod member;
mod persist;
mod plan;
mod policy;
mod pool;
mod registry;
mod wgquick;

pub use compile::{CompiledPolicy, DISABLED_SET, OVERLAY_CHAIN, segment_set, tag_set};
pub use cryptokey::CryptokeyTable;
pub use key::{KeyError, PrivateKey, PublicKey};
pub use member::{Member, MemberId, NewMember};
pub use persist::{FORMAT_VERSION, LoadError, SaveError};
pub use plan::{
    AddressPlan, DEFAULT_QUARANTINE_SECS, PlanError, PlanSpec, Reservation, Segment, SegmentId,
    SegmentSpec,
};
pub use policy::{Association, Policy, PolicyError, PolicyRule, Ports, Proto, Selector, Verdict};
pub use registry::{Registry, RegistryError};
pub use wgquick::{ClientPack, GatewayPeer, PackError};

/// Entry points shared by the fuzz targets in `fuzz/` and the corpus-replay tests, so that
/// what is fuzzed on nightly is also replayed on stable. Not a stable API.
#[doc(hidden)]
#[allow(clippy::panic)] // a broken invariant must crash the fuzzer
pub mod fuzz {
    use crate::Registry;

    /// Registry file bytes, with and without the checksum line: never a panic, and whatever
    /// loads saves to text that loads back to the same registry.
    pub fn registry_file(data: &[u8]) {
        let mut loaded = Vec::new();
        if let Ok(r) = Registry::from_file_bytes(data) {
            loaded.push(r);
        }
        if let Ok(text) = core::str::from_utf8(data)
            && let Ok(r) = Registry::from_toml(text)
        {
            loaded.push(r);
        }
        for r in loaded {
            let Ok(text) = r.to_file_text() else {
                panic!("a loaded registry does not render");
            };
            match Registry::from_file_bytes(text.as_bytes()) {
                Ok(back) => assert_eq!(back.to_file_text().ok(), Some(text)),
                Err(e) => panic!("a saved registry does not load: {e}"),
            }
        }
    }
}
