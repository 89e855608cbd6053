//! The MAC table: (bridge domain, MAC) → port.
//!
//! A lookup of a 1M-entry table is a cache miss, often a TLB miss too, so the table is laid
//! out for one memory access per lookup: open addressing over 64-byte buckets of four 16-byte
//! slots, each slot holding its full key and its entry (no separate control bytes on another
//! page, as a general-purpose hash map has). A key's home bucket comes from a multiplicative
//! hash (the keys are 64-bit integers, not attacker-chosen strings that need SipHash: a flood
//! of chosen MACs is bounded by the learning limits instead); a full bucket spills into the
//! next one. The table is kept at most half full, so a lookup almost always reads one cache
//! line, and a batch of lookups can touch all their lines first to overlap the misses
//! ([`MacTable::touch`]).

use gatekit_packet::PortId;
use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

/// A hasher for small integer keys (the ARP bindings): [`hash`] of each word.
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
        self.0 = hash(k ^ self.0);
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

/// A 64x64→128 multiply folded to 64 bits: every key bit reaches the low bits.
#[inline]
pub(crate) fn hash(k: u64) -> u64 {
    let m = u128::from(k) * 0x9e37_79b9_7f4a_7c15u128;
    (m as u64) ^ ((m >> 64) as u64)
}

const EMPTY: u8 = 0;
/// A removed entry: lookups go on past it, inserts reuse it.
const TOMB: u8 = 1;
const LEARNED: u8 = 2;
const STATIC: u8 = 3;

const SLOTS: usize = 4;
const MIN_BUCKETS: usize = 4;

#[derive(Debug, Clone, Copy, Default)]
struct Slot {
    key: u64,
    secs: u32,
    port: u16,
    state: u8,
}

impl Slot {
    #[inline]
    fn entry(&self) -> MacEntry {
        MacEntry {
            port: PortId(self.port),
            kind: if self.state == STATIC {
                EntryKind::Static
            } else {
                EntryKind::Learned
            },
            last_seen_secs: self.secs,
        }
    }
    #[inline]
    fn live(&self) -> bool {
        self.state >= LEARNED
    }
}

fn state_of(kind: EntryKind) -> u8 {
    match kind {
        EntryKind::Learned => LEARNED,
        EntryKind::Static => STATIC,
    }
}

/// One cache line of slots.
#[derive(Debug, Clone, Copy, Default)]
#[repr(C, align(64))]
struct Bucket([Slot; SLOTS]);

/// Where a key's slot is: bucket and slot index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct SlotRef(usize, usize);

/// A live entry, with in-place access to what learning updates.
pub(crate) struct EntryMut<'a>(&'a mut Slot);

impl EntryMut<'_> {
    #[inline]
    pub(crate) fn port(&self) -> PortId {
        PortId(self.0.port)
    }
    #[inline]
    pub(crate) fn is_static(&self) -> bool {
        self.0.state == STATIC
    }
    /// Marks the entry seen at `secs`, writing only if that changes it (most frames come
    /// within the second of the last one: the line stays clean).
    #[inline]
    pub(crate) fn touch_secs(&mut self, secs: u32) {
        if self.0.secs != secs {
            self.0.secs = secs;
        }
    }
    #[inline]
    pub(crate) fn set_port(&mut self, port: PortId) {
        self.0.port = port.0;
    }
}

/// The MAC table.
#[derive(Debug, Clone)]
pub(crate) struct MacTable {
    buckets: Box<[Bucket]>,
    /// `buckets.len() - 1` (a power of two minus one).
    mask: usize,
    len: usize,
    tombs: usize,
}

impl Default for MacTable {
    fn default() -> Self {
        Self::with_buckets(MIN_BUCKETS)
    }
}

impl MacTable {
    fn with_buckets(n: usize) -> Self {
        let n = n.max(MIN_BUCKETS).next_power_of_two();
        MacTable {
            buckets: vec![Bucket::default(); n].into_boxed_slice(),
            mask: n - 1,
            len: 0,
            tombs: 0,
        }
    }

    /// Live entries.
    pub(crate) fn len(&self) -> usize {
        self.len
    }

    /// Most live entries plus tombstones before the table grows or is rebuilt: half the slots.
    fn limit(&self) -> usize {
        self.buckets.len() * SLOTS / 2
    }

    /// Makes room for `n` more entries without rebuilding.
    pub(crate) fn reserve(&mut self, n: usize) {
        let want = self.len.saturating_add(n);
        if want.saturating_add(self.tombs) > self.limit() {
            self.rebuild(want);
        }
    }

    /// Rebuilds the table with room for `n` entries, dropping the tombstones.
    fn rebuild(&mut self, n: usize) {
        self.rehash(n.saturating_mul(2).div_ceil(SLOTS));
    }

    /// Moves the live entries into a fresh table of `buckets` buckets.
    fn rehash(&mut self, buckets: usize) {
        let old = core::mem::replace(self, Self::with_buckets(buckets));
        for b in old.buckets.iter() {
            for s in b.0.iter().filter(|s| s.live()) {
                self.place(*s);
            }
        }
    }

    /// Puts a slot of a key known to be absent in the first free place of its probe sequence.
    fn place(&mut self, s: Slot) {
        let mut b = hash(s.key) as usize & self.mask;
        loop {
            if let Some(free) = self.buckets[b].0.iter_mut().find(|x| !x.live()) {
                if free.state == TOMB {
                    self.tombs -= 1;
                }
                *free = s;
                self.len += 1;
                return;
            }
            b = (b + 1) & self.mask;
        }
    }

    /// The home bucket of a key hashed to `h`.
    #[inline]
    pub(crate) fn home(&self, h: u64) -> usize {
        h as usize & self.mask
    }

    /// Reads the home bucket's line and returns a word of it, so that a batch can start the
    /// memory accesses of several lookups before it needs any of them.
    #[inline]
    pub(crate) fn touch(&self, h: u64) -> u64 {
        self.buckets.get(self.home(h)).map_or(0, |b| b.0[0].key)
    }

    /// Finds `k`, hashed to `h`.
    #[inline]
    pub(crate) fn find(&self, k: u64, h: u64) -> Option<SlotRef> {
        let mut b = self.home(h);
        // Half full at most: there is always an empty slot, so this ends.
        loop {
            let bucket = self.buckets.get(b)?;
            // The four slots compared at once, without a branch per slot (where in its
            // bucket a key sits is random: a branch on it would be mispredicted). No empty
            // slot comes before a key in its probe sequence (slots only ever empty all at
            // once, in a rebuild), so a match anywhere in the bucket is the key.
            let (mut hit, mut empty) = (0u32, 0u32);
            for (i, s) in bucket.0.iter().enumerate() {
                hit |= u32::from(s.key == k && s.live()) << i;
                empty |= u32::from(s.state == EMPTY) << i;
            }
            if hit != 0 {
                return Some(SlotRef(b, hit.trailing_zeros() as usize));
            }
            if empty != 0 {
                return None;
            }
            b = (b + 1) & self.mask;
        }
    }

    #[inline]
    fn slot(&self, r: SlotRef) -> Option<&Slot> {
        self.buckets.get(r.0).and_then(|b| b.0.get(r.1))
    }

    /// The entry for `k`, hashed to `h`.
    #[inline]
    pub(crate) fn get_h(&self, k: u64, h: u64) -> Option<MacEntry> {
        self.find(k, h).and_then(|r| self.slot(r)).map(Slot::entry)
    }

    /// The entry for `k`.
    pub(crate) fn get(&self, k: u64) -> Option<MacEntry> {
        self.get_h(k, hash(k))
    }

    /// In-place access to the entry for `k`, hashed to `h`.
    #[inline]
    pub(crate) fn get_mut_h(&mut self, k: u64, h: u64) -> Option<EntryMut<'_>> {
        let r = self.find(k, h)?;
        self.buckets
            .get_mut(r.0)
            .and_then(|b| b.0.get_mut(r.1))
            .map(EntryMut)
    }

    /// Inserts a key known to be absent (hashed to `h`).
    #[inline]
    pub(crate) fn insert_new_h(&mut self, k: u64, h: u64, e: MacEntry) {
        if self.len + self.tombs >= self.limit() {
            self.rebuild((self.len + 1).max(self.len.saturating_mul(2)));
        }
        debug_assert_eq!(hash(k), h);
        self.place(Slot {
            key: k,
            secs: e.last_seen_secs,
            port: e.port.0,
            state: state_of(e.kind),
        });
    }

    /// Inserts or replaces the entry for `k`; returns the old one.
    pub(crate) fn insert(&mut self, k: u64, e: MacEntry) -> Option<MacEntry> {
        let h = hash(k);
        if let Some(r) = self.find(k, h)
            && let Some(s) = self.buckets.get_mut(r.0).and_then(|b| b.0.get_mut(r.1))
        {
            let old = s.entry();
            s.port = e.port.0;
            s.secs = e.last_seen_secs;
            s.state = state_of(e.kind);
            return Some(old);
        }
        self.insert_new_h(k, h, e);
        None
    }

    /// Keeps the entries for which `f` says so.
    pub(crate) fn retain(&mut self, mut f: impl FnMut(u64, &MacEntry) -> bool) {
        let mut removed = false;
        for b in self.buckets.iter_mut() {
            for s in b.0.iter_mut().filter(|s| s.live()) {
                if !f(s.key, &s.entry()) {
                    s.state = TOMB;
                    self.len -= 1;
                    self.tombs += 1;
                    removed = true;
                }
            }
        }
        // A bucket whose slots are all tombstones or live makes lookups go on; when many
        // went, start afresh (keeping the capacity for the entries to come back).
        if removed && self.tombs > self.limit() / 4 {
            self.rehash(self.buckets.len());
        }
    }

    /// Every entry, in no particular order.
    pub(crate) fn iter(&self) -> impl Iterator<Item = (u64, MacEntry)> + '_ {
        self.buckets
            .iter()
            .flat_map(|b| b.0.iter())
            .filter(|s| s.live())
            .map(|s| (s.key, s.entry()))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn e(port: u16, secs: u32) -> MacEntry {
        MacEntry {
            port: PortId(port),
            kind: EntryKind::Learned,
            last_seen_secs: secs,
        }
    }

    #[test]
    fn behaves_like_a_map() {
        let mut t = MacTable::default();
        let mut m = HashMap::new();
        let mut x = 0x1234_5678_9abc_def1u64;
        for round in 0..20_000u32 {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            // Few distinct keys (collisions and reuse), zero and high-domain keys included.
            let k = match x % 7 {
                0 => 0,
                1 => 0xffff << 48 | (x >> 40),
                _ => x % 3000,
            };
            match (x >> 20) % 5 {
                0 | 1 => assert_eq!(
                    t.insert(k, e(round as u16, round)),
                    m.insert(k, e(round as u16, round))
                ),
                2 => {
                    let keep = !(x >> 30).is_multiple_of(3);
                    t.retain(|k2, _| keep || k2.is_multiple_of(2));
                    m.retain(|k2, _| keep || k2.is_multiple_of(2));
                }
                _ => assert_eq!(t.get(k), m.get(&k).copied()),
            }
            assert_eq!(t.len(), m.len());
        }
        let mut all: Vec<_> = t.iter().collect();
        all.sort_by_key(|(k, _)| *k);
        let mut want: Vec<_> = m.into_iter().collect();
        want.sort_by_key(|(k, _)| *k);
        assert_eq!(all, want);
        t.reserve(100_000);
        assert_eq!(t.len(), want.len());
        for (k, v) in want {
            assert_eq!(t.get(k), Some(v));
        }
    }
}
