//! The MAC table: (bridge domain, MAC) → port, in one open-addressing hash map with a cheap
//! multiplicative hash (the keys are 64-bit integers, not attacker-chosen strings that need
//! SipHash: a flood of chosen MACs is bounded by the learning limits instead).

use gatekit_packet::PortId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for u64 keys: a 64x64→128 multiply folded to 64 bits.
#[derive(Default, Clone, Copy)]
pub(crate) struct MulHasher(u64);

impl Hasher for MulHasher {
    #[inline]
    fn finish(&self) -> u64 {
        self.0
    }
    #[inline]
    fn write(&mut self, bytes: &[u8]) {
        for &b in bytes {
            self.write_u64(u64::from(b) ^ self.0.rotate_left(8));
        }
    }
    #[inline]
    fn write_u64(&mut self, k: u64) {
        let m = u128::from(k ^ self.0) * 0x9e37_79b9_7f4a_7c15u128;
        self.0 = (m as u64) ^ ((m >> 64) as u64);
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<MulHasher>>;

/// How a MAC entry came to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum EntryKind {
    /// Learned from a source address; ages out.
    Learned,
    /// Configured; never ages, never moves.
    Static,
}

/// One MAC table entry.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MacEntry {
    /// The port the address is behind.
    pub port: PortId,
    /// Learned or static.
    pub kind: EntryKind,
    /// When it was last seen as a source, in whole seconds of [`Instant`](gatekit_packet::Instant).
    pub last_seen_secs: u32,
}

/// The key of (domain index, MAC).
#[inline]
pub(crate) fn key(domain: u16, mac: crate::MacAddr) -> u64 {
    (u64::from(domain) << 48) | mac.to_u64()
}
